import os

# Two virtual CPU devices so that sharded code paths run in tests.
# Must be set before jax is imported.
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import tempfile  # noqa: E402

# conv=auto measures once per session into its own cache, not the user's.
os.environ.setdefault("GRADAMP_JAX_CACHE", tempfile.mkdtemp(prefix="gradamp_cache-"))

import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SWEEP = {}


def _start_mock_sweep():
  """Starts tests/mock_sweep.py in two background processes (once per session).

  The sweep's compilations use XLA's lowest optimisation level, which only changes compile
  time for programs this small.
  """
  if _SWEEP:
    return
  root = tempfile.mkdtemp(prefix="gradamp_mock_sweep-")
  env = dict(
    os.environ,
    XLA_FLAGS="--xla_backend_optimization_level=0",
    JAX_DISABLE_MOST_OPTIMIZATIONS="1",
    PYTHONPATH=ROOT,
  )
  script = os.path.join(ROOT, "tests", "mock_sweep.py")
  parts = []
  for i in range(2):
    log = open(os.path.join(root, f"part{i}.log"), "w")
    parts.append(
      (
        subprocess.Popen(
          [sys.executable, script, root, "--part", str(i), "--parts", "2"],
          env=env,
          cwd=ROOT,
          stdout=log,
          stderr=subprocess.STDOUT,
        ),
        log,
      )
    )
  _SWEEP.update(root=root, parts=parts)


def pytest_collection_modifyitems(config, items):
  # Start the sweep as soon as a collected test needs it: it runs beside the earlier tests.
  if any("mock_sweep" in getattr(item, "fixturenames", ()) for item in items):
    _start_mock_sweep()


def pytest_sessionfinish(session, exitstatus):
  for process, log in _SWEEP.get("parts", []):
    if process.poll() is None:
      process.kill()
      process.wait()
    log.close()
  if _SWEEP:
    shutil.rmtree(_SWEEP["root"], ignore_errors=True)


@pytest.fixture(scope="session")
def mock_sweep():
  """Root of a small real sweep made by tests/mock_sweep.py (started at collection)."""
  _start_mock_sweep()
  for i, (process, log) in enumerate(_SWEEP["parts"]):
    if process.wait():
      log.flush()
      tail = open(os.path.join(_SWEEP["root"], f"part{i}.log")).read()[-4000:]
      raise RuntimeError(f"tests/mock_sweep.py --part {i} failed:\n{tail}")
  return _SWEEP["root"]
