"""Optimizer-state memory of each set of tracked measures, exact, from ``jax.eval_shape``.

    python benchmarks/measure_state.py --model resnet18

Builds the training program's optimizer (amplification with tracking, weight decay, SGD
momentum) for each tracked set and sums the bytes of its state's arrays; nothing is
allocated or run. The parameters and the momentum are listed for scale.
"""

import argparse
import os
import sys

import jax
import numpy as np
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # noqa: E402
from gradamp_jax import models  # noqa: E402
from gradamp_jax.training import optimizer  # noqa: E402

SETS = (("G",), ("G_prime",), ("G", "G_prime"), ("GSNR",), ("G", "G_prime", "GSNR"))


def nbytes(tree) -> int:
  return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree)))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet18")
  args = parser.parse_args()
  model = models.create(args.model, 10)
  params = nnx.split(model, nnx.Param, ...)[1].to_pure_dict()
  print(f"{args.model}: parameters {nbytes(params) / 2**20:.1f} MiB")
  print("| tracked measures | optimizer state | of which tracking |")
  print("|---|---|---|")
  config = quickstart.get_config()
  config.amplification.method = "none"
  config.track_directionality = False
  plain = nbytes(jax.eval_shape(optimizer.create_optimizer(config, 100).init, params))
  print(f"| (none: SGD momentum) | {plain / 2**20:.1f} MiB | 0 |")
  config.track_directionality = True
  for tracked in SETS:
    config.tracked_measures = tracked
    state = nbytes(jax.eval_shape(optimizer.create_optimizer(config, 100).init, params))
    print(f"| {', '.join(tracked)} | {state / 2**20:.1f} MiB | {(state - plain) / 2**20:.1f} MiB |")


if __name__ == "__main__":
  main()
