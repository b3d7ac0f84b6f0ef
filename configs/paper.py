"""The paper's experiments (Basodi et al. 2023, §4; docs/method.md §7), selected by arguments.

    python -m gradamp_jax.main --workdir runs/r18-c10-gp1-t1.0 \
        --config configs/paper.py:model=resnet18,measure=G_prime,case=1,threshold=1.0

Arguments (defaults in brackets): model [resnet18] (vgg19 | resnet18 | resnet34 use the
paper's params_1 strategy, resnet50 | resnet101 params_2), dataset [cifar10 | cifar100],
method [intelligent | none | random | matched_random | all], measure [G_prime | G],
case [1 | 2], threshold [1.0], reselect [0: once per phase | 2 | 5 epochs], ratio [0.3,
for method=random], seed [0], validation_fraction [0.0: the paper's protocol; 0.1 holds
out 10 % of train to choose thresholds on].

150 epochs, SGD momentum 0.9, batch 128, weight decay 5e-4, LR 0.1 then 0.01.
Expected (paper, best run; docs/method.md §7): ResNet-18 CIFAR-10 92.39 % without amplification,
94.49 % with G′ case 1. Not run to completion here (each run needs a GPU for hours).

``get_sweep(arg)`` lists the runs of one model/dataset family for ``launch/sweep.py``:

    python launch/sweep.py --config configs/paper.py \
        --sweep model=resnet18,dataset=cifar10,seeds=3,validation_fraction=0.1 \
        --root runs/r18-c10 --mode print
"""

import numpy as np

from configs import default
from gradamp_jax.training.config_args import parse_arg

STRATEGY = {
  "vgg19": default.PARAMS_1,
  "resnet18": default.PARAMS_1,
  "resnet34": default.PARAMS_1,
  "resnet50": default.PARAMS_2,
  "resnet101": default.PARAMS_2,
}
# Thresholds of the paper: 0.7–2.5 step 0.1 (params_1 models); 1.0–3.0 step 0.25 (deeper).
THRESHOLDS = {
  "params_1": tuple(float(round(t, 2)) for t in np.arange(0.7, 2.5 + 1e-9, 0.1)),
  "params_2": tuple(float(round(t, 2)) for t in np.arange(1.0, 3.0 + 1e-9, 0.25)),
}
ARGS = dict(
  model="resnet18",
  dataset="cifar10",
  method="intelligent",
  measure="G_prime",
  case=1,
  threshold=1.0,
  reselect=0,
  ratio=0.3,
  seed=0,
  validation_fraction=0.0,
)


def get_config(arg=None):
  args = parse_arg(arg, **ARGS)
  if args["model"] not in STRATEGY:
    raise ValueError(
      f"config argument model={args['model']!r}: the paper's models are {', '.join(STRATEGY)}"
    )
  config = default.get_config()
  config.model = args["model"]
  config.dataset = args["dataset"]
  config.phases = STRATEGY[args["model"]]
  config.seed = args["seed"]
  config.validation_fraction = args["validation_fraction"]
  amp = config.amplification
  amp.method = args["method"]
  amp.measure = args["measure"]
  amp.case = args["case"]
  amp.threshold = args["threshold"]
  amp.reselect_every = args["reselect"]
  amp.ratio = args["ratio"]
  return config


def get_sweep(arg=None):
  """Runs of one model/dataset family, every method on the same seeds (paired).

  Per seed: the original model (``none``), random [16] (``ratio``), all layers (``all``),
  and G/G′ × cases 1/2 × the paper's thresholds, each intelligent run with its
  ``matched_random`` control (``controls=false`` leaves out ``all`` and the matched
  controls: the paper's own grid). Per seed that is 155 runs for the params_1 models
  (19 thresholds; 78 without controls) and 75 for params_2 (9 thresholds; 38).

  Arguments: model, dataset (as get_config), seeds [3], reselect [0], ratio [0.3],
  validation_fraction [0.0], controls [true].
  Returns a list of ``get_config`` argument dicts.
  """
  args = parse_arg(
    arg,
    model="resnet18",
    dataset="cifar10",
    seeds=3,
    reselect=0,
    ratio=0.3,
    validation_fraction=0.0,
    controls=True,
  )
  if args["model"] not in STRATEGY:
    raise ValueError(
      f"sweep argument model={args['model']!r}: the paper's models are {', '.join(STRATEGY)}"
    )
  if args["seeds"] < 1:
    raise ValueError(f"sweep argument seeds={args['seeds']}: must be at least 1")
  base = dict(
    model=args["model"],
    dataset=args["dataset"],
    reselect=args["reselect"],
    validation_fraction=args["validation_fraction"],
  )
  family = "params_1" if STRATEGY[args["model"]] == default.PARAMS_1 else "params_2"
  measured = ("intelligent", "matched_random") if args["controls"] else ("intelligent",)
  runs = []
  for seed in range(args["seeds"]):
    runs.append(dict(base, method="none", seed=seed))
    runs.append(dict(base, method="random", ratio=args["ratio"], seed=seed))
    if args["controls"]:
      runs.append(dict(base, method="all", seed=seed))
    for measure in ("G", "G_prime"):
      for case in (1, 2):
        for threshold in THRESHOLDS[family]:
          for method in measured:
            runs.append(
              dict(base, method=method, measure=measure, case=case, threshold=threshold, seed=seed)
            )
  return runs
