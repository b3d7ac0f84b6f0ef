import os

# Two virtual CPU devices so that sharded code paths run in tests.
# Must be set before jax is imported.
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="session")
def mock_sweep(tmp_path_factory):
  """Root of a small real sweep (tests/mock_sweep.py), made once per test session.

  Two processes share the runs; the sweep's compilations use XLA's lowest optimisation
  level, which only changes compile time for programs this small.
  """
  root = str(tmp_path_factory.mktemp("mock_sweep"))
  env = dict(os.environ, XLA_FLAGS="--xla_backend_optimization_level=0",
             JAX_DISABLE_MOST_OPTIMIZATIONS="1", PYTHONPATH=ROOT)
  script = os.path.join(ROOT, "tests", "mock_sweep.py")
  parts = [subprocess.Popen([sys.executable, script, root, "--part", str(i), "--parts", "2"],
                            env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  for part in parts:
    output, _ = part.communicate()
    if part.returncode:
      raise RuntimeError(f"tests/mock_sweep.py failed:\n{output[-4000:]}")
  return root
