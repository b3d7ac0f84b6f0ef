"""A two-run sweep small enough for the SLURM tests (``launch/sweep.py --config`` this file).

ResNet-8 on a tiny image folder (``--config.image_folder=...``), 3 epochs of the fault-run
schedule; ``grid=seeds``: one intelligent run per seed 0 .. ``seeds`` - 1 (default 2; a tree
each when branched);
``grid=rules``: thresholds 0.5 and 1.0 at seed 0 (one tree).
"""

from configs import default
from gradamp_jax.training.config_args import parse_arg


def get_config(arg=None):
  args = parse_arg(arg, seed=0, threshold=0.5)
  config = default.get_config()
  config.model = "resnet8"
  config.batch_size, config.eval_batch_size = 8, 16
  config.phases = ((1, 0.05, 0, 1), (3, 0.05, 1, 2))
  config.conv = "lax"
  config.seed = args["seed"]
  config.amplification.update(measure="G", case=2, threshold=args["threshold"])
  return config


def get_sweep(arg=None):
  args = parse_arg(arg, grid="seeds", seeds=2)
  if args["grid"] == "seeds":
    return [dict(seed=seed) for seed in range(args["seeds"])]
  return [dict(threshold=0.5), dict(threshold=1.0)]
