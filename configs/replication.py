"""A scaled replication of the paper on one CPU: ResNet-8, 10,000 CIFAR-10 training images.

    python -m gradamp_jax.main --config configs/replication.py:method=none,seed=0 \
        --workdir runs/rep/none-0 --config.image_folder=~/data/cifar10-jpg

The paper's strategy shape in 6 epochs: an un-amplified warm-up epoch, an amplified phase
at LR 0.1 (analysis epoch 2, amplified epoch 3), an amplified phase at LR 0.01 (analysis
epoch 4, amplified epoch 5), an un-amplified last epoch. Training set: the first 11,111
training images less a seeded 10 % validation split (10,000 train, 1,111 validation); the
full 10,000-image test set. ``docs/replication.md`` has the protocol and the results.

Arguments (defaults in brackets): method [intelligent | none | random | matched_random |
all], measure [G_prime | G], case [1 | 2], threshold [1.0], ratio [0.3], seed [0].

``get_sweep(arg)`` lists the study for ``launch/sweep.py``:

    python launch/sweep.py --config configs/replication.py --sweep seeds=3 \
        --root runs/rep --mode local --branch --config.image_folder=~/data/cifar10-jpg
"""

from configs import default
from gradamp_jax.training.config_args import parse_arg

PHASES = ((1, 0.1, 0, 1), (3, 0.1, 1, 2), (5, 0.01, 1, 2), (6, 0.01, 0, 1))
ARGS = dict(method="intelligent", measure="G_prime", case=1, threshold=1.0, ratio=0.3, seed=0)
GRIDS = ("study", "full")


def get_config(arg=None):
  args = parse_arg(arg, **ARGS)
  config = default.get_config()
  config.model = "resnet8"
  config.train_split = "train[:11111]"
  config.validation_fraction = 0.1
  config.phases = PHASES
  config.seed = args["seed"]
  amp = config.amplification
  amp.method = args["method"]
  amp.measure = args["measure"]
  amp.case = args["case"]
  amp.threshold = args["threshold"]
  amp.ratio = args["ratio"]
  return config


def get_sweep(arg=None):
  """Every method on the same seeds (paired), for ``launch/sweep.py`` (best with ``--branch``).

  ``grid=study`` (what docs/replication.md ran), per seed: none, all, random; intelligent
  G′ case 1 at each of ``thresholds``, G′ case 2 and G cases 1 and 2 at the last one;
  matched random for G′ case 1 and G case 1 at the last threshold (10 runs). ``grid=full``: G and G′
  × cases 1 and 2 × ``thresholds``, each with its matched random control.

  Arguments: seeds [3], thresholds [0.5+1.0] (``+``-separated), grid [study | full].
  """
  args = parse_arg(arg, seeds=3, thresholds="0.5+1.0", grid="study")
  if args["grid"] not in GRIDS:
    raise ValueError(f"sweep argument grid={args['grid']!r}: expected one of {GRIDS}")
  if args["seeds"] < 1:
    raise ValueError(f"sweep argument seeds={args['seeds']}: must be at least 1")
  try:
    thresholds = [float(t) for t in args["thresholds"].split("+")]
  except ValueError:
    raise ValueError(
      f"sweep argument thresholds={args['thresholds']!r}: expected numbers "
      "separated by '+', e.g. 0.5+1.0"
    ) from None
  last = thresholds[-1]
  if args["grid"] == "full":
    measured = [
      dict(method=method, measure=measure, case=case, threshold=t)
      for measure in ("G", "G_prime")
      for case in (1, 2)
      for t in thresholds
      for method in ("intelligent", "matched_random")
    ]
  else:
    measured = [
      dict(method="intelligent", measure="G_prime", case=1, threshold=t) for t in thresholds
    ]
    measured += [
      dict(method="intelligent", measure=measure, case=case, threshold=last)
      for measure, case in (("G_prime", 2), ("G", 1), ("G", 2))
    ]
    measured += [
      dict(method="matched_random", measure=measure, case=1, threshold=last)
      for measure in ("G_prime", "G")
    ]
  runs = []
  for seed in range(args["seeds"]):
    runs += [dict(method=method, seed=seed) for method in ("none", "all", "random")]
    runs += [dict(rule, seed=seed) for rule in measured]
  return runs
