"""The CPU convolution (im2col kernel gradient) against lax's, in the training step.

    python benchmarks/conv_gradient.py --model resnet8 --batch_size 128

Builds the training program's step (quickstart config) once with
``lax.conv_general_dilated`` and once with ``gradamp_jax.models.conv.conv_general_dilated``
in every convolution, and times them taking turns; prints ms per step of each turn.
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
from gradamp_jax import train  # noqa: E402
from gradamp_jax.models import common  # noqa: E402
from gradamp_jax.models import conv as conv_lib  # noqa: E402


def build(config, conv_fn, batch):
  original = common.conv_lib.conv_general_dilated
  common.conv_lib.conv_general_dilated = conv_fn  # what common.conv passes to nnx.Conv on CPU
  try:
    tx = train.create_optimizer(config, steps_per_epoch=100)
    graphdef, state = train.create_train_state(config, 10, tx)
  finally:
    common.conv_lib.conv_general_dilated = original
  step = jax.jit(train.make_train_step(graphdef, tx))
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
  batch = dict(image=jnp.asarray(rng.normal(size=(args.batch_size, 32, 32, 3)), jnp.float32),
               label=jnp.asarray(rng.integers(0, 10, args.batch_size), jnp.int32))
  variants = {"lax.conv_general_dilated": jax.lax.conv_general_dilated,
              "im2col kernel gradient": conv_lib.conv_general_dilated}
  built = {name: build(config, fn, batch) for name, fn in variants.items()}
  times = {name: [] for name in variants}
  for _ in range(args.turns):
    for name, (step, state) in built.items():
      start = time.perf_counter()
      for _ in range(args.steps):
        state, _ = step(state, batch)
      jax.block_until_ready(state)
      times[name].append(1e3 * (time.perf_counter() - start) / args.steps)
  print(f"{args.model}, batch {args.batch_size}, {jax.devices()[0].device_kind}")
  for name, values in times.items():
    print(f"{name:26s} " + "  ".join(f"{v:.0f}" for v in values) + " ms per step")


if __name__ == "__main__":
  main()
