"""The depth study (docs/depth.md): VGG-19 without shortcuts at width 0.25 on one CPU.

    python -m gradamp_jax.main --config configs/depth.py:method=none,seed=0 \
        --workdir runs/depth/none-0 --config.image_folder=~/data/cifar10-jpg

The replication's protocol (configs/replication.py: 10,000 training and 1,111 validation
images, the full test set; the paper's strategy shape in 6 epochs) on ``vgg19`` (16
convolutions with BatchNorm, no shortcuts) at ``width=0.25`` (16-128 channels, 1,256,922
parameters), at learning rate 0.05 for the first two phases and 0.005 for the last two
(0.1 left this network at chance for its first two epochs in the pilot), tracking G′.

Arguments: those of configs/replication.py, with ``lr`` [0.05], ``tracked`` [G_prime],
and ``model`` [vgg19], ``width`` [0.25].

``get_sweep(arg)`` lists the pre-registered arms for ``launch/sweep.py``:

    python launch/sweep.py --config configs/depth.py --sweep seeds=5 --root runs/depth \
        --mode local --branch --cohort 8 --config.image_folder=~/data/cifar10-jpg
"""

from configs import replication
from gradamp_jax.training.config_args import parse_arg

ARGS = dict(replication.ARGS, lr=0.05, tracked="G_prime", model="vgg19", width=0.25)
THRESHOLDS = (0.5, 1.0, 1.5, 2.0)  # intelligent G′ case 1
MATCHED_AT = (1.0, 2.0)  # its matched-random control


def get_config(arg=None):
  args = parse_arg(arg, **ARGS)
  config = replication.build({k: args[k] for k in replication.ARGS})
  config.model, config.width = args["model"], args["width"]
  return config


def get_sweep(arg=None):
  """Per seed: ``none``; ``all`` (every layer ×2); intelligent G′ case 1 at each of
  :data:`THRESHOLDS`; matched random at each of :data:`MATCHED_AT` — 8 runs, paired.

  Arguments: seeds [5], first_seed [0].
  """
  args = parse_arg(arg, seeds=5, first_seed=0)
  if args["seeds"] < 1:
    raise ValueError(f"sweep argument seeds={args['seeds']}: must be at least 1")
  g_prime = dict(measure="G_prime", case=1)
  per_seed = [
    dict(method="none"),
    dict(method="all"),
    *(dict(method="intelligent", **g_prime, threshold=t) for t in THRESHOLDS),
    *(dict(method="matched_random", **g_prime, threshold=t) for t in MATCHED_AT),
  ]
  seeds = range(args["first_seed"], args["first_seed"] + args["seeds"])
  return [dict(rule, seed=seed) for seed in seeds for rule in per_seed]
