"""A scaled replication of the paper on one CPU: ResNet-8, 10,000 CIFAR-10 training images.

    python -m gradamp_jax.main --config configs/replication.py:method=none,seed=0 \
        --workdir runs/rep/none-0 --config.image_folder=~/data/cifar10-jpg

The paper's strategy shape in 6 epochs: an un-amplified warm-up epoch, an amplified phase
at LR 0.1 (analysis epoch 2, amplified epoch 3), an amplified phase at LR 0.01 (analysis
epoch 4, amplified epoch 5), an un-amplified last epoch. Training set: the first 11,111
training images less a seeded 10 % validation split (10,000 train, 1,111 validation); the
full 10,000-image test set. ``docs/replication.md`` has the protocol and the results.

Arguments (defaults in brackets): method [intelligent | none | random | matched_random |
all], measure [G_prime | G], case [1 | 2], threshold [1.0], ratio [0.3], seed [0],
optimizer [sgd | adamw | lamb | lars], lr [0.1: the first phases' learning rate, the last
two phases get a tenth], where [gradients | updates], weight_decay [5e-4].

``get_sweep(arg)`` lists the study for ``launch/sweep.py``:

    python launch/sweep.py --config configs/replication.py --sweep seeds=3 \
        --root runs/rep --mode local --branch --config.image_folder=~/data/cifar10-jpg
"""

from configs import default
from gradamp_jax.training.config_args import parse_arg

PHASES = ((1, 0.1, 0, 1), (3, 0.1, 1, 2), (5, 0.01, 1, 2), (6, 0.01, 0, 1))
ARGS = dict(
  method="intelligent",
  measure="G_prime",
  case=1,
  threshold=1.0,
  ratio=0.3,
  seed=0,
  optimizer="sgd",
  lr=0.1,
  where="gradients",
  weight_decay=5e-4,
  action="amplify",
  alpha=1.0,
  lo=0.0,
  hi=2.0,
  tracked="G+G_prime",
)
GRIDS = ("study", "full", "placement", "lr", "actions")


def get_config(arg=None):
  return build(parse_arg(arg, **ARGS))


def build(args: dict):
  """The config of parsed arguments ``args`` (every key of :data:`ARGS`)."""
  config = default.get_config()
  config.model = "resnet8"
  config.train_split = "train[:11111]"
  config.validation_fraction = 0.1
  lr = args["lr"]  # the learning rate of the first two phases; the last two get a tenth
  config.phases = tuple((end, lr if rate == 0.1 else lr / 10, a, f) for end, rate, a, f in PHASES)
  config.optimizer = args["optimizer"]
  config.weight_decay = float(args["weight_decay"])
  config.seed = args["seed"]
  amp = config.amplification
  amp.method = args["method"]
  amp.measure = args["measure"]
  amp.case = args["case"]
  amp.threshold = args["threshold"]
  amp.ratio = args["ratio"]
  amp.where = args["where"]
  amp.action = args["action"]
  amp.alpha, amp.lo, amp.hi = float(args["alpha"]), float(args["lo"]), float(args["hi"])
  config.tracked_measures = tuple(args["tracked"].split("+"))
  return config


def get_sweep(arg=None):
  """Every method on the same seeds (paired), for ``launch/sweep.py`` (best with ``--branch``).

  ``grid=study`` (what docs/replication.md ran), per seed: none, all, random; intelligent
  G′ case 1 at each of ``thresholds``, G′ case 2 and G cases 1 and 2 at the last one;
  matched random for G′ case 1 and G case 1 at the last threshold (10 runs). ``grid=full``: G and G′
  × cases 1 and 2 × ``thresholds``, each with its matched random control.
  ``grid=placement`` (docs/adamw.md, with ``optimizer=adamw``), per seed: none; all
  (updates ×2); G′ case 1 at each of ``thresholds`` amplifying gradients, the same amplifying
  updates; matched random (updates) at the last threshold. ``grid=lr``: ``none`` at each
  of ``lrs`` (a learning-rate sweep on validation accuracy). ``grid=actions`` (the actions
  study, docs/method.md §10), per seed, every run tracking G, G′ and GSNR: none; amplify G′
  case 1 at each of ``thresholds`` and its matched random at the last; scale_by_zscore on G′
  at each of ``alphas`` (updates); freeze the lower tail of G′ (case 3, updates) at each of
  ``thresholds`` and freeze as many random layers at the last; scale_by_zscore on GSNR
  (alpha 0.5 in [0.5, 1.5], updates). ``first_seed`` starts the seeds elsewhere than 0
  (the study's seeds are 3-5: ``first_seed=3``).

  Arguments: seeds [3], thresholds [0.5+1.0] and lrs [3e-4+1e-3+3e-3] (``+``-separated),
  grid [study | full | placement | lr], optimizer [sgd], lr [0.1], weight_decay [5e-4];
  the last three are given to every run (and name it) when not their defaults.
  """
  args = parse_arg(
    arg,
    seeds=3,
    thresholds="0.5+1.0",
    lrs="3e-4+1e-3+3e-3",
    grid="study",
    optimizer="sgd",
    lr=0.1,
    weight_decay=5e-4,
    alphas="0.5+1.0",
    first_seed=0,
  )
  if args["grid"] not in GRIDS:
    raise ValueError(f"sweep argument grid={args['grid']!r}: expected one of {GRIDS}")
  if args["seeds"] < 1:
    raise ValueError(f"sweep argument seeds={args['seeds']}: must be at least 1")
  thresholds, lrs = _numbers(args, "thresholds"), _numbers(args, "lrs")
  shared = {k: args[k] for k in ("optimizer", "lr", "weight_decay") if args[k] != ARGS[k]}
  if args["grid"] == "lr":
    shared.pop("lr", None)
    per_seed = [dict(method="none", lr=lr) for lr in lrs]
  elif args["grid"] == "actions":
    shared["tracked"] = "G+G_prime+GSNR"  # one state layout for every run: one tree
    per_seed = _actions(thresholds, _numbers(args, "alphas"))
  else:
    per_seed = _per_seed(args["grid"], thresholds)
  seeds = range(args["first_seed"], args["first_seed"] + args["seeds"])
  return [dict(shared, **rule, seed=seed) for seed in seeds for rule in per_seed]


def _actions(thresholds, alphas) -> list[dict]:
  last, g_prime = thresholds[-1], dict(measure="G_prime")
  frozen = dict(g_prime, case=3, action="freeze", where="updates")
  by_zscore = dict(action="scale_by_zscore", where="updates")
  return [
    dict(method="none"),
    *(dict(method="intelligent", **g_prime, case=1, threshold=t) for t in thresholds),
    dict(method="matched_random", **g_prime, case=1, threshold=last),
    *(dict(method="intelligent", **g_prime, **by_zscore, alpha=a) for a in alphas),
    *(dict(method="intelligent", **frozen, threshold=t) for t in thresholds),
    dict(method="matched_random", **frozen, threshold=last),
    dict(method="intelligent", measure="GSNR", **by_zscore, alpha=0.5, lo=0.5, hi=1.5),
  ]


def _numbers(args, key) -> list[float]:
  try:
    return [float(t) for t in args[key].split("+")]
  except ValueError:
    raise ValueError(
      f"sweep argument {key}={args[key]!r}: expected numbers separated by '+', e.g. 0.5+1.0"
    ) from None


def _per_seed(grid, thresholds) -> list[dict]:
  last = thresholds[-1]
  g_prime_1 = dict(measure="G_prime", case=1)
  if grid == "placement":
    return [
      dict(method="none"),
      dict(method="all", where="updates"),
      *(
        dict(method="intelligent", **g_prime_1, threshold=t, where=where)
        for where in ("gradients", "updates")
        for t in thresholds
      ),
      dict(method="matched_random", **g_prime_1, threshold=last, where="updates"),
    ]
  if grid == "full":
    return [
      dict(method=method, measure=measure, case=case, threshold=t)
      for measure in ("G", "G_prime")
      for case in (1, 2)
      for t in thresholds
      for method in ("intelligent", "matched_random")
    ]
  return [
    dict(method="none"),
    dict(method="all"),
    dict(method="random"),
    *(dict(method="intelligent", **g_prime_1, threshold=t) for t in thresholds),
    *(
      dict(method="intelligent", measure=measure, case=case, threshold=last)
      for measure, case in (("G_prime", 2), ("G", 1), ("G", 2))
    ),
    *(
      dict(method="matched_random", measure=measure, case=1, threshold=last)
      for measure in ("G_prime", "G")
    ),
  ]
