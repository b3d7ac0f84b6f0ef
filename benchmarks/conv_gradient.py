"""The CPU convolution (im2col kernel gradient) against lax's, in the training step.

    python benchmarks/conv_gradient.py --model resnet8 --batch_size 128

Builds the training program's step (quickstart config) once with ``conv=lax`` and once with
``conv=im2col``, times them taking turns, prints ms per step of each turn and says which
``--config.conv`` is faster on this machine (the answer differs between CPUs).
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # noqa: E402
from gradamp_jax import models  # noqa: E402
from gradamp_jax.training import optimizer  # noqa: E402
from gradamp_jax.training import steps as steps_lib  # noqa: E402


def build(config, conv, batch):
  config = config.copy_and_resolve_references()
  config.conv = conv
  tx = optimizer.create_optimizer(config, steps_per_epoch=100)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  step = jax.jit(steps_lib.make_train_step(graphdef, tx))
  state, _ = step(state, batch)
  return step, jax.block_until_ready(state)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet8")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=8, help="timed steps per turn")
  parser.add_argument("--turns", type=int, default=2)
  args = parser.parse_args()
  if jax.default_backend() != "cpu":
    raise SystemExit("this benchmark compares the CPU convolutions; run it on a CPU")
  config = quickstart.get_config()
  config.model = args.model
  rng = np.random.default_rng(0)
  batch = dict(
    image=jnp.asarray(rng.normal(size=(args.batch_size, 32, 32, 3)), jnp.float32),
    label=jnp.asarray(rng.integers(0, 10, args.batch_size), jnp.int32),
  )
  built = {name: build(config, name, batch) for name in models.CONV_IMPLEMENTATIONS}
  times = {name: [] for name in built}
  for _ in range(args.turns):
    for name, (step, state) in built.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        state, _ = step(state, batch)
      jax.block_until_ready(state)
      times[name].append(1e3 * (time.perf_counter() - start) / args.steps)
  print(f"{args.model}, batch {args.batch_size}, {jax.devices()[0].device_kind}")
  for name, values in times.items():
    print(f"conv={name:8s} " + "  ".join(f"{v:.0f}" for v in values) + " ms per step")
  best = min(times, key=lambda name: min(times[name]))
  print(f"faster here: --config.conv={best}")


if __name__ == "__main__":
  main()
