"""``python -m gradamp_jax.main --config configs/<file>.py --workdir DIR``: trains one run.

The command line lives in :mod:`gradamp_jax.training.main`; this module keeps the short name.
"""

from gradamp_jax.training import main

if __name__ == "__main__":
  main.run()
