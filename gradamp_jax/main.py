"""Trains one run: ``python -m gradamp_jax.main --config configs/<file>.py --workdir DIR``.

A config file that takes arguments is given as ``configs/<file>.py:arg``; config fields are
overridden with ``--config.FIELD=VALUE``. Running the same command again on the same workdir
resumes from the latest checkpoint. Exit statuses: 0 done, 1 the run failed, 2 bad
command-line input, 75 stopped by a signal after saving a checkpoint (run it again). The
command line is gradamp_jax/training/main.py; docs/training.md has the rest.
"""

from absl import flags

from gradamp_jax.training import main

flags.adopt_module_key_flags(main)  # --help lists the program's flags, not only --helpfull

if __name__ == "__main__":
  main.run()
