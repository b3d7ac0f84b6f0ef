"""A small real sweep on tfds.testing.mock_data, for the report and notebook tests.

    python tests/mock_sweep.py ROOT [--part 0 --parts 1]

2 seeds × {none, all, random, intelligent G case 1 at thresholds 0.5 and 1.0,
matched_random G case 1} on ResNet-8, 48 mock images (a quarter held out for validation),
3 epochs (epoch 2 analysed, epoch 3 amplified). Runs lie two levels deep under ROOT.
Compilations are shared between seeds through JAX's persistent cache under ROOT.
"""

import argparse
import os
import shutil
import sys
from unittest import mock

NUM_EXAMPLES = 48
SEEDS = (0, 1)
RUNS = (
  dict(method="none"),
  dict(method="all"),
  dict(method="random", ratio=0.3),
  dict(method="intelligent", threshold=0.5),
  dict(method="intelligent", threshold=1.0),
  dict(method="matched_random", threshold=0.5),
)


def run_dirs(root):
  """(workdir, amplification overrides, seed) of every run of the sweep."""
  out = []
  for amp in RUNS:
    name = "-".join(f"{k}={v}" for k, v in amp.items())
    for seed in SEEDS:
      out.append((os.path.join(root, amp["method"], f"{name}-seed={seed}"), amp, seed))
  return out


def config_for(amp, seed):
  from configs import default

  config = default.get_config()
  config.model = "resnet8"
  config.batch_size = 8
  config.eval_batch_size = 16
  config.validation_fraction = 0.25
  config.phases = ((1, 0.05, 0, 1), (3, 0.05, 1, 2))
  config.seed = seed
  config.amplification.measure = "G"
  config.amplification.case = 1
  config.amplification.update(amp)
  return config


def copy_sweep(root, dest):
  """Copies a sweep's run files (no checkpoints) to ``dest``; returns it as a string."""
  shutil.copytree(
    root, dest, ignore=shutil.ignore_patterns("checkpoints", "tensorboard", ".jax_cache")
  )
  return str(dest)


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("root")
  parser.add_argument("--part", type=int, default=0)
  parser.add_argument("--parts", type=int, default=1)
  args = parser.parse_args(argv)
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import jax
  import tensorflow_datasets as tfds

  from gradamp_jax.training import train

  jax.config.update("jax_compilation_cache_dir", os.path.join(args.root, ".jax_cache"))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  with (
    mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True),
    tfds.testing.mock_data(num_examples=NUM_EXAMPLES),
  ):
    for workdir, amp, seed in run_dirs(args.root):
      if RUNS.index(amp) % args.parts == args.part:  # a method's seeds share compilations
        train.train_and_evaluate(config_for(amp, seed), workdir)


if __name__ == "__main__":
  main()
