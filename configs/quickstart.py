"""Quickstart: ResNet-8 on 20 % of CIFAR-10 for 3 epochs, G′ case 1, threshold 1.0.

    python -m gradamp_jax.main --config configs/quickstart.py --workdir runs/quickstart

Offline, with CIFAR-10 as an image folder (docs/data.md):

    python -m gradamp_jax.main --config configs/quickstart.py --workdir runs/quickstart \
        --config.image_folder=~/data/cifar10-jpg

Epoch 1 trains without amplification at LR 0.1; the amplified phase runs at 0.02: epoch 2
is its analysis epoch, epoch 3 amplifies the selected layers by 2. Expected (measured on a
2-core AMD EPYC VM, JPEG image folder, conv=auto): 153-159 s, test accuracy 42.68, 41.11
and 40.86 % for seeds 0, 1 and 2 (README, Quickstart).

Arguments (``configs/quickstart.py:method=none,seed=1``): method, measure, case,
threshold, ratio, seed, validation_fraction, optimizer [sgd | adamw: the AdamW study's
settings, learning rates a tenth of SGD's, weight decay 0.05, the factor on the updates].
``get_sweep(arg)`` lists a small grid with every control, on paired seeds, for
``launch/sweep.py``:

    python launch/sweep.py --config configs/quickstart.py --sweep seeds=3,thresholds=1.0 \
        --root runs/qs --mode print
"""

from configs import default
from gradamp_jax.training.config_args import parse_arg

# A plain epoch at LR 0.1, then the amplified phase at 0.02: its analysis epoch (2) and its
# amplified epoch (3) end at a lower learning rate than the first, so the final accuracy
# depends less on where the last noisy steps leave it.
PHASES = ((1, 0.1, 0, 1), (3, 0.02, 1, 2))
ARGS = dict(
  method="intelligent",
  measure="G_prime",
  case=1,
  threshold=1.0,
  ratio=0.3,
  seed=0,
  validation_fraction=0.0,
  optimizer="sgd",
)


def get_config(arg=None):
  args = parse_arg(arg, **ARGS)
  config = default.get_config()
  config.model = "resnet8"
  config.train_split = "train[:20%]"
  config.validation_fraction = args["validation_fraction"]
  config.seed = args["seed"]
  config.phases = PHASES
  amp = config.amplification
  amp.method = args["method"]
  amp.measure = args["measure"]
  amp.case = args["case"]
  amp.threshold = args["threshold"]
  amp.ratio = args["ratio"]
  return default.use_optimizer(config, args["optimizer"])


def get_sweep(arg=None):
  """Per seed: none, all, random, and intelligent + matched random for G/G′ × case 1/2 ×
  ``thresholds`` (``+``-separated, e.g. ``thresholds=0.5+1.0``).

  Arguments: seeds [3], thresholds [1.0], validation_fraction [0.1].
  """
  args = parse_arg(arg, seeds=3, thresholds="1.0", validation_fraction=0.1)
  try:
    thresholds = [float(t) for t in args["thresholds"].split("+")]
  except ValueError:
    raise ValueError(
      f"sweep argument thresholds={args['thresholds']!r}: expected numbers "
      "separated by '+', e.g. 0.5+1.0"
    ) from None
  base = dict(validation_fraction=args["validation_fraction"])
  runs = []
  for seed in range(args["seeds"]):
    for method in ("none", "all", "random"):
      runs.append(dict(base, method=method, seed=seed))
    for measure in ("G", "G_prime"):
      for case in (1, 2):
        for threshold in thresholds:
          for method in ("intelligent", "matched_random"):
            runs.append(
              dict(base, method=method, measure=measure, case=case, threshold=threshold, seed=seed)
            )
  return runs
