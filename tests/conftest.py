"""Session-wide settings and the shared mock sweep.

The suite runs in three pytest-xdist workers by default (``-n 3`` in pyproject.toml); every
process it starts (workers, training subprocesses, SLURM jobs) inherits the environment set
here before jax is imported, and so shares one session folder.
"""

import os

# Two virtual CPU devices so that sharded code paths run in tests.
# Must be set before jax is imported.
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import tempfile  # noqa: E402

# The session folder: made by the first process (the xdist controller, or a plain pytest),
# inherited by the others, removed by its maker at the end.
OWNS_SESSION = "GRADAMP_TEST_SESSION" not in os.environ
if OWNS_SESSION:
  os.environ["GRADAMP_TEST_SESSION"] = tempfile.mkdtemp(prefix="gradamp_test-")
SESSION = os.environ["GRADAMP_TEST_SESSION"]
# conv=auto measures once per session into it, not into the user's cache.
os.environ.setdefault("GRADAMP_JAX_CACHE", os.path.join(SESSION, "gradamp_cache"))
# JAX's persistent compilation cache: a program compiled once in the session (by a test, a
# training subprocess or a job) is loaded, not compiled, by every later run that builds the
# same program. Its key holds the program, the XLA flags and the backend, so it serves only
# identical compilations.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(SESSION, "jax_cache"))
COMPILATION_CACHE = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP_ROOT = os.path.join(SESSION, "mock_sweep")
SWEEP_PARTS = 2
SWEEP_TIMEOUT_S = 1800


def uninterrupted_run() -> str:
  """The workdir of the uninterrupted fault run (``tests/fault_run.py``, seed 0) that every
  fault chain must end identical to: trained once per session by the first process that asks
  (test_faults.py and test_slurm.py run in two workers), the others waiting on its lock; its
  programs go to the session's compilation cache."""
  import fcntl

  folder = os.path.join(SESSION, "uninterrupted")
  workdir, done = os.path.join(folder, "run"), os.path.join(folder, "done")
  os.makedirs(folder, exist_ok=True)
  with open(os.path.join(folder, "lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not os.path.exists(done):
      shutil.rmtree(workdir, ignore_errors=True)
      command = [sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), workdir]
      env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=COMPILATION_CACHE)
      result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env
      )
      if result.returncode:
        raise RuntimeError(f"the uninterrupted run failed: {result.stderr[-3000:]}")
      open(done, "w").close()
  return workdir


def _start_mock_sweep():
  """Starts tests/mock_sweep.py in two background processes, once per session: the first
  process to create the sweep's folder starts it; each part writes its exit status to
  ``part{i}.rc`` when it ends.

  The sweep's compilations use XLA's lowest optimisation level, which only changes compile
  time for programs this small.
  """
  try:
    os.mkdir(SWEEP_ROOT)
  except FileExistsError:
    return  # started by another process of this session
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_backend_optimization_level=0",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    PYTHONPATH=ROOT,
  )
  script = os.path.join(ROOT, "tests", "mock_sweep.py")
  for i in range(SWEEP_PARTS):
    part = os.path.join(SWEEP_ROOT, f"part{i}")
    command = f'"{sys.executable}" "{script}" "{SWEEP_ROOT}" --part {i} --parts {SWEEP_PARTS}'
    script_line = f'{command} > "{part}.log" 2>&1; echo $? > "{part}.rc.tmp"; '
    script_line += f'mv "{part}.rc.tmp" "{part}.rc"'
    process = subprocess.Popen(
      ["sh", "-c", script_line],
      env=env,
      cwd=ROOT,
      start_new_session=True,  # outlives the worker that started it; ended by the owner
    )
    with open(f"{part}.pid", "w") as f:
      f.write(str(process.pid))


def _stop_mock_sweep():
  for i in range(SWEEP_PARTS):
    try:
      with open(os.path.join(SWEEP_ROOT, f"part{i}.pid")) as f:
        os.killpg(int(f.read()), signal.SIGKILL)
    except (OSError, ValueError):
      pass  # never started, or already ended


# Modules whose tests share an expensive module fixture (a trained run, a cluster) run in one
# xdist worker (``--dist loadgroup``): the fixture is built once. In this order, first: the
# longest groups start while the short tests fill the other worker; the tests that read the
# mock sweep come last, when it has finished beside the others.
GROUPS = {
  "test_slurm": "slurm",  # one cluster on fixed ports
  "test_branching": "branching",
  "test_faults": "faults",
  "test_fork": "fork",
  "test_train": "train",
  "test_cohort": "cohort",
  "test_report": "mock_sweep",
  "test_notebooks": "mock_sweep",
}
ORDER = ("slurm", "branching", "faults", "fork", "train", "cohort", None, "mock_sweep")


def _group(item):
  module = getattr(item, "module", None)
  return GROUPS.get(module.__name__.rpartition(".")[2]) if module else None


# A config file that registers a measure when read: run as the config of a test's runs,
# not imported by the doctest collection (it would register the measure in a worker).
collect_ignore = ["own_measure.py"]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the marks
def pytest_collection_modifyitems(config, items):
  # Start the sweep as soon as a collected test needs it: it runs beside the earlier tests.
  if any("mock_sweep" in getattr(item, "fixturenames", ()) for item in items):
    _start_mock_sweep()
  for item in items:
    if _group(item):
      item.add_marker(pytest.mark.xdist_group(_group(item)))
  items.sort(key=lambda item: ORDER.index(_group(item)))  # stable: order within a group kept


def pytest_sessionfinish(session, exitstatus):
  if OWNS_SESSION:  # the last process of the session to finish
    _stop_mock_sweep()
    shutil.rmtree(SESSION, ignore_errors=True)


@pytest.fixture(scope="session")
def mock_sweep():
  """Root of a small real sweep made by tests/mock_sweep.py (started at collection)."""
  _start_mock_sweep()
  deadline = time.monotonic() + SWEEP_TIMEOUT_S
  for i in range(SWEEP_PARTS):
    rc_path = os.path.join(SWEEP_ROOT, f"part{i}.rc")
    while not os.path.exists(rc_path):
      if time.monotonic() > deadline:
        raise RuntimeError(f"tests/mock_sweep.py --part {i} not done after {SWEEP_TIMEOUT_S} s")
      time.sleep(0.5)
    with open(rc_path) as f:
      status = f.read().strip()
    if status != "0":
      with open(os.path.join(SWEEP_ROOT, f"part{i}.log")) as f:
        tail = f.read()[-4000:]
      raise RuntimeError(f"tests/mock_sweep.py --part {i} failed (status {status}):\n{tail}")
  return SWEEP_ROOT
