"""The training program: ``python -m gradamp_jax.main``.

The loop is :mod:`~gradamp_jax.training.train` (a run is a cohort of one); each other module
says what it holds (docs/architecture.md maps them).
"""
