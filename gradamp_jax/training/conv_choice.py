"""``config.conv = "auto"``: the faster convolution of this machine, measured once and kept.

Off the CPU ``auto`` is ``lax``; on a CPU the first run times ``lax`` and ``im2col`` and caches
the winner per CPU model and JAX version (docs/training.md).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from gradamp_jax import models, run_folder

AUTO = "auto"


def cache_dir() -> str:
  return os.environ.get("GRADAMP_JAX_CACHE") or os.path.expanduser("~/.cache/gradamp_jax")


def machine_key() -> dict:
  """What decides the choice: the CPU model and the JAX/jaxlib versions."""
  return dict(cpu=_cpu_model(), jax=jax.__version__, jaxlib=jax.lib.__version__)


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


# What is timed, part of the cache key: a changed measurement measures again.
MEASUREMENT = "forward and backward of a ResNet-8-like stack of 3x3 convolutions"
# (stride, input channels, output channels) of the stack, on 32x32 CIFAR-sized images.
_STACK = ((1, 3, 16), (1, 16, 16), (1, 16, 16), (2, 16, 32), (1, 32, 32), (2, 32, 64), (1, 64, 64))


def measure(repeats: int = 3, batch: int = 128) -> dict[str, float]:
  """Seconds per forward and backward pass of :data:`_STACK`, best of ``repeats``, for each
  implementation."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, 32, 32, 3)), jnp.float32)
  kernels = [
    jnp.asarray(rng.normal(size=(3, 3, i, o)) / np.sqrt(9 * i), jnp.float32) for _, i, o in _STACK
  ]
  seconds = {}
  for name, conv in models.CONV_IMPLEMENTATIONS.items():

    def loss(kernels, x, conv=conv):
      for (stride, _, _), w in zip(_STACK, kernels):
        numbers = jax.lax.conv_dimension_numbers(x.shape, w.shape, ("NHWC", "HWIO", "NHWC"))
        x = jax.nn.relu(conv(x, w, (stride, stride), ((1, 1), (1, 1)), dimension_numbers=numbers))
      return jnp.sum(x**2)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(grad(kernels, x))
    best = float("inf")
    for _ in range(repeats):
      start = time.perf_counter()
      jax.block_until_ready(grad(kernels, x))
      best = min(best, time.perf_counter() - start)
    seconds[name] = best
  return seconds


@functools.cache
def fastest() -> str:
  """This machine's faster implementation: ``lax`` off the CPU; else from the cache, or
  measured and cached (the first writer of the key wins). Once per process."""
  if jax.default_backend() != "cpu":
    return "lax"
  key = dict(machine_key(), measured=MEASUREMENT)
  digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
  path = os.path.join(cache_dir(), f"conv-{digest}.json")
  recorded, how = _recorded(path, "choice"), "measured before"
  if recorded is None:
    seconds = measure()
    choice = min(seconds, key=seconds.get)
    _write_once(path, dict(key, choice=choice, seconds=seconds))
    recorded = _recorded(path, "choice") or choice
    times = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in seconds.items())
    how = f"a ResNet-8's convolutions forward and backward: {times}"
  print(f"conv=auto: {recorded} on this CPU ({how}; kept in {path})", file=sys.stderr, flush=True)
  return recorded


def _recorded(path: str, field: str) -> str | None:
  """The implementation ``field`` of JSON file ``path`` names, if it names one."""
  choice = run_folder.read_json(*os.path.split(path), default={}).get(field)
  return choice if choice in models.CONV_IMPLEMENTATIONS else None


def _write_once(path: str, record: dict) -> None:
  try:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
      json.dump(record, f, indent=2)
    try:
      os.link(tmp, path)  # fails if another process wrote the key first
    except FileExistsError:
      pass
    finally:
      os.remove(tmp)
  except OSError as e:  # a read-only home: measure again next time
    print(f"warning: conv=auto could not keep its choice in {path} ({e})", file=sys.stderr)


def resolve(config, *workdirs: str | None):
  """``config`` with ``conv`` concrete: for ``auto`` the choice the first of ``workdirs``
  recorded, else :func:`fastest` (the lead process's)."""
  if config.conv != AUTO:
    return config
  recorded = (_recorded(run_folder.path(w, run_folder.CONFIG), "conv") for w in workdirs if w)
  choice = next(filter(None, recorded), None)
  if choice is None:
    choice = fastest()
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      index = list(models.CONV_IMPLEMENTATIONS).index(choice)
      index = int(multihost_utils.broadcast_one_to_all(np.int32(index)))
      choice = list(models.CONV_IMPLEMENTATIONS)[index]
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.conv = choice
  return config
