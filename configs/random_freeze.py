"""Random layer freezing in the spirit of LISA (Pan et al. 2024, arXiv:2403.17919), on the
replication protocol (configs/replication.py: ResNet-8, 10,000 CIFAR-10 training images,
6 epochs, SGD with momentum).

    python -m gradamp_jax.main --config configs/random_freeze.py:ratio=0.3,seed=3 \\
        --workdir runs/random-freeze/3 --config.image_folder=~/data/cifar10-jpg

At each selection of an amplified phase (analysis epochs 2 and 4, as for the intelligent
method) ``round(ratio × L)`` layers are drawn at random and frozen until the phase ends:
their updates are multiplied by 0 after the optimizer (``where="updates"``), so momentum and
weight decay do not move them either. The freezing twin of the random amplification of
Basodi et al. (2020). How it differs from LISA: LISA samples a few middle layers to *train*
(freezing the rest, the embedding and head always trained) and re-samples every K steps
while fine-tuning language models; here a fixed fraction of every eligible layer is frozen
and re-drawn once per phase (``reselect_every`` re-draws every k epochs), from scratch on
CIFAR. ``configs/replication.py:method=random,action=freeze,where=updates`` is the same run.

Arguments: ratio [0.3], seed [0], reselect_every [0: once per phase].
"""

from configs import replication
from gradamp_jax.training.config_args import parse_arg


def get_config(arg=None):
  args = parse_arg(arg, ratio=0.3, seed=0, reselect_every=0)
  config = replication.get_config(f"method=random,ratio={args['ratio']},seed={args['seed']}")
  amp = config.amplification
  amp.action, amp.where = "freeze", "updates"
  amp.reselect_every = args["reselect_every"]
  return config
