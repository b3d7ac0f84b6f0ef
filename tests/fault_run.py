"""Runs the training program on mock CIFAR with a fault injected at a chosen point.

    python tests/fault_run.py WORKDIR [FAULT] [--config.field=value ...]

The config file is configs/quickstart.py, or ``$FAULT_CONFIG`` (a path), with the
overrides of :data:`TINY` and then the command line's.

FAULT is ``SIGNAL@E.K`` — the process sends itself SIGNAL (KILL, TERM, INT, USR1, USR2) when
the call that runs step K (0-based) of epoch E is about to start (2 steps per call) — or
``KILL@save=N``, SIGKILL right after the asynchronous save of checkpoint N has started.
With ``$FAULT_ONCE`` set to a path, the fault fires only if that file does not exist yet (and
creates it). Everything else is the real command line (``gradamp_jax.main``), so exit
statuses are the program's own. Under pytest, compilations come from the session's persistent
cache (``$JAX_COMPILATION_CACHE_DIR``, tests/conftest.py), so repeated runs start quickly;
``$FAULT_CALL_SECONDS`` sleeps that long before every training
call (a window for a scheduler's signal).
"""

import os
import signal
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from absl import app  # noqa: E402

from gradamp_jax import input_pipeline  # noqa: E402
from gradamp_jax.training import main, train  # noqa: E402
from tests.test_train import mock_cifar  # noqa: E402

# The configuration of tests/test_train.py's tiny_config, as overrides.
TINY = [
  "--config.model=resnet8",
  "--config.train_split=train",
  "--config.batch_size=8",
  "--config.eval_batch_size=16",
  "--config.phases=((1, 0.05, 0, 1), (3, 0.05, 1, 2))",
  "--config.amplification.measure=G",
  "--config.amplification.case=2",
  "--config.amplification.threshold=0.5",
  "--config.steps_per_dispatch=2",
]


def fire(signum):
  """Sends ``signum`` to this process; with $FAULT_ONCE (a path), only the first time."""
  once = os.environ.get("FAULT_ONCE")
  if once:
    if os.path.exists(once):
      return
    open(once, "w").close()
  os.kill(os.getpid(), signum)


def inject(fault: str) -> None:
  name, _, where = fault.partition("@")
  signum = getattr(signal, f"SIG{name}")
  if where.startswith("save="):
    step = int(where[len("save=") :])
    save = ocp.CheckpointManager.save

    def save_then_die(self, index, *args, **kwargs):
      result = save(self, index, *args, **kwargs)
      if index == step:
        fire(signum)
      return result

    ocp.CheckpointManager.save = save_then_die
    return
  epoch, step = (int(x) for x in where.split("."))

  def chunk_after_signal(train_chunk, current_epoch):
    def chunk(state, data, plan, start, stop, history):
      if current_epoch == epoch and start <= step < stop:
        fire(signum)
      return train_chunk(state, data, plan, start, stop, history)

    return chunk

  wrap_chunks(chunk_after_signal, first_only=True)  # one signal per step, not one a member


def slow_down(seconds: float) -> None:
  """Sleeps ``seconds`` before every training call: a window for a scheduler's signal."""

  def slow_chunk(train_chunk, current_epoch):
    def chunk(*args):
      time.sleep(seconds)
      return train_chunk(*args)

    return chunk

  wrap_chunks(slow_chunk, first_only=False)


def wrap_chunks(wrap, *, first_only: bool) -> None:
  """Replaces the training chunk of each of the members' programs (the first only, with
  ``first_only``) by ``wrap(train_chunk, epoch)``."""
  train_epoch = train.train_epoch

  def wrapped_train_epoch(groups, *args, **kwargs):
    groups = [
      g._replace(train_chunk=wrap(g.train_chunk, kwargs["epoch"]))
      if i == 0 or not first_only
      else g
      for i, g in enumerate(groups)
    ]
    return train_epoch(groups, *args, **kwargs)

  train.train_epoch = wrapped_train_epoch


def log_loads(path: str) -> None:
  """Appends "PROCESS start|end DOWNLOAD TIME" to ``path`` around each data load."""
  load = input_pipeline.load_for_seeds

  def logged_load(*args, **kwargs):
    def log(what):
      with open(path, "a") as f:
        f.write(f"{jax.process_index()} {what} {kwargs.get('download')} {time.time()}\n")

    log("start")
    result = load(*args, **kwargs)
    log("end")
    return result

  input_pipeline.load_for_seeds = logged_load


if __name__ == "__main__":
  workdir, rest = sys.argv[1], sys.argv[2:]
  if os.environ.get("FAULT_LOAD_LOG"):
    log_loads(os.environ["FAULT_LOAD_LOG"])
  if os.environ.get("FAULT_CALL_SECONDS"):
    slow_down(float(os.environ["FAULT_CALL_SECONDS"]))
  if rest and not rest[0].startswith("--"):
    inject(rest.pop(0))
  sys.argv = [
    sys.argv[0],
    "--config",
    os.environ.get("FAULT_CONFIG", os.path.join(ROOT, "configs/quickstart.py")),
    "--workdir",
    workdir,
    *TINY,
    *rest,
  ]
  with mock_cifar():
    app.run(main.main, flags_parser=main.parse_flags)
