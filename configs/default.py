"""Default configuration: ResNet-18 on CIFAR-10, the paper's params_1 strategy, G′ case 1.

    python -m gradamp_jax.main --config configs/default.py --workdir runs/default

Every field below is part of the public interface; override any with
``--config.field=value`` (e.g. ``--config.amplification.threshold=1.5``). The paper
reports 94.49 % test accuracy for its best ResNet-18 G′ case-1 run on CIFAR-10 and
92.39 % for the model without amplification (docs/method.md §7); this default has not been run
to completion here (150 epochs need a GPU).
"""

import ml_collections
from ml_collections import config_dict

PARAMS_1 = ((50, 0.1, 0, 1), (100, 0.1, 1, 2), (130, 0.01, 1, 2), (150, 0.01, 0, 1))
PARAMS_2 = ((10, 0.1, 0, 1), (100, 0.1, 1, 2), (145, 0.01, 1, 2), (150, 0.01, 0, 1))
# Per optimizer, what the studies chose (docs/replication.md, docs/adamw.md): the phases'
# learning rates as a multiple of SGD's, the weight decay, where the factor applies (under
# Adam a factor on the gradients is cancelled by the second moment: docs/method.md §9).
STUDIED_OPTIMIZERS = {
  "sgd": dict(lr_scale=1.0, weight_decay=5e-4, where="gradients"),
  "adamw": dict(lr_scale=0.1, weight_decay=0.05, where="updates"),
}


def use_optimizer(config, name: str):
  """``config`` (phases written for SGD) switched to optimizer ``name`` with the settings
  its study chose (:data:`STUDIED_OPTIMIZERS`); returns it."""
  if name not in STUDIED_OPTIMIZERS:
    raise ValueError(
      f"config argument optimizer={name!r}: one of {', '.join(STUDIED_OPTIMIZERS)} (the "
      "studied ones); for another, set --config.optimizer and --config.phases yourself"
    )
  chosen = STUDIED_OPTIMIZERS[name]
  config.optimizer = name
  config.weight_decay = chosen["weight_decay"]
  config.amplification.where = chosen["where"]
  config.phases = tuple(
    (end, round(lr * chosen["lr_scale"], 12), is_amp, factor)
    for end, lr, is_amp, factor in config.phases
  )
  return config


def get_config():
  config = ml_collections.ConfigDict()
  config.model = "resnet18"
  config.width = 1.0  # channel multiplier of the VGG and ResNet families (0.25: VGG 16-128)
  config.dataset = "cifar10"  # cifar10 | cifar100
  config.data_dir = config_dict.placeholder(str)  # TFDS data_dir (None: TFDS default)
  config.download = True  # let TFDS download and prepare when missing
  config.image_folder = config_dict.placeholder(str)  # read train/<class>/*, test/<class>/*
  config.train_split = "train"  # TFDS slicing allowed, e.g. "train[:20%]"
  config.validation_fraction = 0.0  # carve a validation split from train
  config.batch_size = 128  # global, over all devices
  config.eval_batch_size = 500
  config.phases = PARAMS_1  # (end_epoch, learning_rate, is_amp, amp_factor)
  config.optimizer = "sgd"  # sgd | adamw | lamb | lars (optax); learning rates: the phases'
  config.momentum = 0.9  # sgd and lars
  config.weight_decay = 5e-4  # sgd: coupled (added to the gradient); others: decoupled
  config.adam_b1 = 0.9  # adamw and lamb
  config.adam_b2 = 0.999
  config.adam_eps = 1e-8
  config.lars_trust_coefficient = 0.001
  config.seed = 0
  config.half_precision = False  # bfloat16 compute, float32 params
  config.conv = "auto"  # auto | lax | im2col: auto measures once per CPU
  # which is faster (training/conv_choice.py); GPUs: lax
  config.steps_per_dispatch = 0  # training steps per jitted call; 0: automatic (1 on
  # CPU, 50 elsewhere); a signal stops within two calls
  config.keep_checkpoints = 2
  config.track_directionality = True  # the tracked measures of every layer, every epoch
  # -> directionality.jsonl
  config.tracked_measures = ("G", "G_prime")  # any of gradamp_jax.measures.MEASURES

  config.amplification = amp = ml_collections.ConfigDict()
  amp.method = "intelligent"  # none | intelligent | random | matched_random | all
  amp.measure = "G_prime"  # G | G_prime
  amp.case = 1  # 1: Ĝ > t (upper tail); 2: |Ĝ| > t (two-sided); 3: Ĝ < -t (lower tail)
  amp.threshold = 1.0  # t > 0: case 2 refuses t <= 0 (every layer), cases 1 and 3 warn
  amp.reselect_every = 0  # epochs; 0: once per amplified phase
  amp.ratio = 0.3  # fraction of layers for method=random
  amp.eligible = "all"  # all | kernels (Conv/Dense only)
  amp.where = "gradients"  # gradients (the paper: before the optimizer) | updates (after
  # it: a per-layer learning-rate multiplier, the same under every optimizer)
  amp.action = "amplify"  # what a selection does (gradamp_jax.actions): amplify (x the
  # phase's factor) | freeze (x 0; where=updates) | scale_by_zscore | one's own
  amp.alpha = 1.0  # scale_by_zscore: every eligible layer x clip(1 + alpha * z, lo, hi)
  amp.lo = 0.0
  amp.hi = 2.0
  return config
