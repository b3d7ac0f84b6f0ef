"""The training program: ``python -m gradamp_jax.main``.

* :mod:`~gradamp_jax.training.train`: ``train_and_evaluate`` and ``train_cohort``, the one
  loop of a run (a cohort of one) and of a cohort;
* :mod:`~gradamp_jax.training.cohort`: what is particular to cohorts of several runs;
* :mod:`~gradamp_jax.training.data`: a config's data, read once for every member;
* :mod:`~gradamp_jax.training.steps`: the state and the jitted functions (step, chunk,
  evaluation);
* :mod:`~gradamp_jax.training.optimizer`: the optax chain a config asks for;
* :mod:`~gradamp_jax.training.outputs`: every file a run writes into its workdir;
* :mod:`~gradamp_jax.training.conv_choice`: ``conv="auto"``, the faster CPU convolution;
* :mod:`~gradamp_jax.training.checkpointing`, :mod:`~gradamp_jax.training.preemption`,
  :mod:`~gradamp_jax.training.workdir_lock`: surviving crashes, signals and a second run;
* :mod:`~gradamp_jax.training.config_fields`, :mod:`~gradamp_jax.training.config_args`:
  the config's field rules, overrides and config-file arguments;
* :mod:`~gradamp_jax.training.main`: the command line.
"""
