"""``config.conv = "auto"``: the faster convolution of this machine, measured once and kept.

On a GPU (any backend but the CPU) ``auto`` is ``lax``. On a CPU, which of XLA's own
convolution (``lax``) and the im2col kernel gradient (``im2col``,
:mod:`gradamp_jax.models.conv`) is faster depends on the CPU (BENCHMARKS.md: 1.5x either
way), so the first run on a machine times the kernel gradient of a 3x3, 16->16-channel
convolution on a 128x32x32 batch both ways (a few seconds) and records the winner in a cache
file keyed by the CPU model and the JAX version (``$GRADAMP_JAX_CACHE``, default
``~/.cache/gradamp_jax``). The first writer of a key wins, so runs started together agree.

A run records its resolved choice in ``config.json``: resuming it, forking from it and every
member of a branched sweep use that choice, whatever the cache says now, so that resumption
stays bitwise.
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
  """Seconds per forward and backward pass (the input's and every kernel's gradient, as in
  a training step) of the 3x3 convolutions of a ResNet-8 (:data:`_STACK`, ReLU between),
  best of ``repeats``, for each implementation."""
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
  recorded = _recorded(path, "choice")
  if recorded is None:
    seconds = measure()
    choice = min(seconds, key=seconds.get)
    _write_once(path, dict(key, choice=choice, seconds=seconds))
    recorded = _recorded(path, "choice") or choice
    times = ", ".join(f"{k} {1e3 * v:.0f} ms" for k, v in seconds.items())
    how = f"a ResNet-8's convolutions forward and backward: {times}"
  else:
    how = "measured before"
  print(f"conv=auto: {recorded} on this CPU ({how}; kept in {path})", file=sys.stderr, flush=True)
  return recorded


def _recorded(path: str, field: str) -> str | None:
  """The implementation ``field`` of JSON file ``path`` names, if it names one."""
  try:
    with open(path) as f:
      choice = json.load(f).get(field)
  except (OSError, ValueError):
    return None
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
  """``config`` with ``conv`` concrete: as given, or for ``auto`` the choice the first of
  ``workdirs`` that recorded one made (a run being resumed, a fork's parent), else
  :func:`fastest`. With several processes, every process takes the lead's choice."""
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
