"""A per-layer learning rate from the gradient signal-to-noise ratio, in the spirit of VRGD
(arXiv:2309.13681) and MoLS (arXiv:2605.05794), on the replication protocol
(configs/replication.py: ResNet-8, 10,000 CIFAR-10 training images, 6 epochs, SGD).

    python -m gradamp_jax.main --config configs/gsnr_learning_rate.py:alpha=0.5,seed=3 \\
        --workdir runs/gsnr-lr/3 --config.image_folder=~/data/cifar10-jpg

In each amplified phase the GSNR of every layer over its analysis epoch (docs/method.md §3)
is z-scored across the layers, and every eligible layer's update is multiplied by
``clip(1 + alpha · ẑ, lo, hi)`` until the phase ends (``scale_by_zscore``, no threshold,
``where="updates"``: a per-layer learning-rate multiplier). How it differs from those
methods: they set each step's (VRGD) or each layer's (MoLS) learning rate from a GSNR
estimated continually during training, proportionally to the ratio itself; here the ratio is
measured once per phase (an analysis epoch), used through its z-score (so its scale across
layers does not matter) and clipped to ``[lo, hi]``.

Arguments: alpha [0.5], lo [0.5], hi [1.5], seed [0].
"""

from configs import replication
from gradamp_jax.training.config_args import parse_arg


def get_config(arg=None):
  args = parse_arg(arg, alpha=0.5, lo=0.5, hi=1.5, seed=0)
  config = replication.get_config(f"method=intelligent,seed={args['seed']}")
  config.tracked_measures = ("G", "G_prime", "GSNR")
  amp = config.amplification
  amp.measure, amp.action, amp.where = "GSNR", "scale_by_zscore", "updates"
  amp.alpha, amp.lo, amp.hi = float(args["alpha"]), float(args["lo"]), float(args["hi"])
  return config
