"""Command line: ``python -m gradamp_jax.main --config configs/<file>.py --workdir DIR``.

Config fields can be overridden with ``--config.field=value``; a config file that takes
arguments is given as ``configs/<file>.py:arg``. Running the same command again on the
same workdir resumes from the latest checkpoint.
"""

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gradamp_jax import config_fields
from gradamp_jax import train

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file("config", None, "Training configuration file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
_DISTRIBUTED = flags.DEFINE_bool(
    "distributed", False, "Call jax.distributed.initialize() first (multi-host launches).")
flags.mark_flags_as_required(["config", "workdir"])


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Separates ``--config.field=value`` (or ``--config.field value``) from other flags."""
  rest, overrides = [], []
  args = iter(argv)
  for arg in args:
    if arg.startswith("--config."):
      overrides.append(arg if "=" in arg else f"{arg}={next(args, '')}")
    else:
      rest.append(arg)
  return rest, overrides


def parse_flags(argv: list[str]) -> list[str]:
  """absl flags, then the config overrides; a bad one is one line on stderr, exit 2."""
  global _OVERRIDES
  rest, _OVERRIDES = split_overrides(argv)
  sys.argv[:] = rest  # ml_collections reads overrides from sys.argv itself
  try:
    argv = FLAGS(rest)
    FLAGS.config.keys()  # a config file that failed to load raises here
    return argv
  except (flags.Error, ValueError, OSError, ImportError, SyntaxError, AttributeError,
          KeyError, TypeError) as e:
    _usage_error(_last_line(e))


def _last_line(error: BaseException) -> str:
  """One line for an error that ml_collections wrapped with a whole traceback."""
  lines = [l.strip() for l in str(error).splitlines() if l.strip()]
  if isinstance(error, OSError) and "Failed loading config file" in str(error):
    return f"--config: cannot load {lines[-2]}: {lines[-1]}"
  return lines[-1] if lines else type(error).__name__


def _usage_error(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


_OVERRIDES: list[str] = []


def main(argv):
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  try:
    config_fields.apply_overrides(config, _OVERRIDES)
    config_fields.check_fields(config)  # the rest needs the devices: train.validate_config
  except ValueError as e:
    _usage_error(str(e))
  if not FLAGS["verbosity"].present:  # keep library INFO chatter (orbax, XLA) out of the way
    logging.set_verbosity(logging.WARNING)
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
  print(f"JAX {jax.__version__}, devices: {jax.devices()}", flush=True)
  try:
    train.train_and_evaluate(config, _WORKDIR.value)
  except (ValueError, OSError, ImportError, train.NonFiniteError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  jax.config.config_with_absl()
  app.run(main, flags_parser=parse_flags)
