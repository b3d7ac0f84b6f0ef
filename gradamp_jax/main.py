"""Command line: ``python -m gradamp_jax.main --config configs/<file>.py --workdir DIR``.

Config fields can be overridden with ``--config.field=value``; a config file that takes
arguments is given as ``configs/<file>.py:arg``. Running the same command again on the
same workdir resumes from the latest checkpoint.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gradamp_jax import train

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host launches).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS["verbosity"].present:  # keep library INFO chatter (orbax, XLA) out of the way
    logging.set_verbosity(logging.WARNING)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  print(f"JAX {jax.__version__}, devices: {jax.devices()}", flush=True)
  try:
    train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except (ValueError, OSError, ImportError, train.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main)
