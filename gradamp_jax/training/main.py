"""Command line: ``python -m gradamp_jax.main --config configs/<file>.py --workdir DIR``.

Override config fields with ``--config.field=value``; a config file's argument is given as
``configs/<file>.py:arg``. Running the same command again resumes.

Exit statuses: 0 done; 1 the run failed (message on stderr); 2 bad command-line input
(one line naming the flag or config field); 75 (``preemption.EXIT_PREEMPTED``) stopped by
SIGTERM, SIGINT, SIGUSR1 or SIGUSR2 after saving a checkpoint: run the same command again.
"""

import os
import re
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from gradamp_jax.training import cohort, config_fields, preemption, train

FLAGS = flags.FLAGS
_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Training configuration file.", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for outputs and checkpoints.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --distributed.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --distributed: 0 .. N-1.")
_FORK_EPOCH = flags.DEFINE_integer("fork_epoch", None, "With --fork_from: the epoch.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Call jax.distributed.initialize() first (multi-process runs)."
)
_UNTIL_EPOCH = flags.DEFINE_integer(
  "until_epoch", None, "Stop after this epoch's checkpoint (run again without it to go on)."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address",
  None,
  "With --distributed: host:port of process 0 (clusters that "
  "jax.distributed.initialize() recognises, e.g. SLURM, need none of these three).",
)
_FORK_FROM = flags.DEFINE_string(
  "fork_from",
  None,
  "Start from this run's checkpoint at the end of --fork_epoch "
  "(gradamp_jax.sweeps.fork): the runs may differ only in their selection rule.",
)
_COHORT = flags.DEFINE_multi_string(
  "cohort",
  None,
  "FIELD=V1,V2,...: train one run for each combination of these values as one program "
  "(gradamp_jax.training.cohort), each in WORKDIR/FIELD=V-...; FIELD is seed or an "
  "amplification rule field (threshold, alpha, lo, hi). --cohort K and --cohort auto, "
  "which group a sweep's runs, are launch/sweep.py's.",
)
flags.mark_flags_as_required(["config", "workdir"])
# What a bad flag or config file raises while the flags are parsed.
_LOAD_ERRORS = (flags.Error, ValueError, OSError, ImportError, SyntaxError, AttributeError)
_LOAD_ERRORS += (KeyError, TypeError)
_OVERRIDES: list[str] = []  # the --config.field=value arguments, applied in main()


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
  except _LOAD_ERRORS as e:
    _usage_error(_last_line(e))


def _last_line(error: BaseException) -> str:
  """One line for an error that ml_collections wrapped with a whole traceback."""
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  if isinstance(error, OSError) and "Failed loading config file" in str(error):
    return f"--config: cannot load {lines[-2]}: {_without_class(lines[-1])}"
  return _without_class(lines[-1]) if lines else type(error).__name__


def _without_class(line: str) -> str:
  """A traceback's last line without its exception class (``ValueError: x`` -> ``x``)."""
  return re.sub(r"^(?:[A-Za-z_][\w.]*\.)?[A-Z]\w*(?:Error|Exception): ", "", line)


def _usage_error(message: str):
  print(f"error: {message}", file=sys.stderr)
  sys.exit(2)


def main(argv):
  if len(argv) > 1:
    _usage_error(f"unexpected arguments: {' '.join(argv[1:])}")
  config = _CONFIG.value
  try:
    config_fields.apply_overrides(config, _OVERRIDES)
    config_fields.check_fields(config)  # the rest needs the devices: config_fields.validate_config
  except ValueError as e:
    _usage_error(str(e))
  if not FLAGS["verbosity"].present:  # keep library INFO chatter (orbax, XLA) out of the way
    logging.set_verbosity(logging.WARNING)
  if (_FORK_FROM.value is None) != (_FORK_EPOCH.value is None):
    _usage_error("--fork_from and --fork_epoch go together")
  if _FORK_FROM.value is not None and _DISTRIBUTED.value:
    _usage_error("--fork_from: fork in one process (without --distributed), then run on")
  for flag in (_FORK_EPOCH, _UNTIL_EPOCH):
    if flag.value is not None and flag.value < 1:
      _usage_error(f"--{flag.name}: must be a positive epoch, got {flag.value}")
  if _COHORT.value and (_DISTRIBUTED.value or _FORK_FROM.value is not None):
    _usage_error("--cohort: train a cohort in one process, without --distributed or --fork_from")
  members = None
  if _COHORT.value:
    try:
      members = cohort.members_of(config, _WORKDIR.value, _COHORT.value)
    except ValueError as e:
      _usage_error(str(e))
  if _DISTRIBUTED.value:  # CPU collectives over gloo, for CPU-only runs
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=_COORDINATOR.value,
      num_processes=_NUM_PROCESSES.value,
      process_id=_PROCESS_ID.value,
      heartbeat_timeout_seconds=30,
    )
  print(f"JAX {jax.__version__}, devices: {jax.devices()}", flush=True)
  try:
    if _FORK_FROM.value is not None:
      from gradamp_jax.sweeps import fork

      if fork.fork(config, _WORKDIR.value, _FORK_FROM.value, _FORK_EPOCH.value):
        print(f"Forked from {_FORK_FROM.value} at epoch {_FORK_EPOCH.value}", flush=True)
    if members is not None:
      train.train_cohort(*members, until_epoch=_UNTIL_EPOCH.value)
    else:
      train.train_and_evaluate(config, _WORKDIR.value, until_epoch=_UNTIL_EPOCH.value)
  except preemption.Preempted as e:
    _exit(f"{e}", preemption.EXIT_PREEMPTED, prefix="")
  except (ValueError, OSError, ImportError, train.NonFiniteError, train.WorkdirBusyError) as e:
    _exit(f"{e}", 1)
  except Exception as e:  # with several processes, say which one and end it now
    if jax.process_count() == 1:
      raise
    _exit(f"{type(e).__name__}: {e}", 1)
  if jax.process_count() > 1:
    _exit("", 0)


def _exit(message: str, status: int, prefix: str = "error: "):
  """Prints ``message`` and exits; with several processes at once, so the others end too."""
  if message:
    if jax.process_count() > 1:
      first = message.splitlines()[0]
      if "Gloo" in message or "heartbeat" in message or "coordination" in message.lower():
        message = f"another process of this run ended, so this one stops too ({first[:200]})"
      prefix = f"{prefix}process {jax.process_index()}: "
    print(f"{prefix}{message}", file=sys.stderr, flush=True)
  if jax.process_count() > 1:
    sys.stdout.flush()
    os._exit(status)
  sys.exit(status)


def run():
  """The ``python -m gradamp_jax.main`` entry point."""
  jax.config.config_with_absl()
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
