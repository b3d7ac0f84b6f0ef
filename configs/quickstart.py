"""Quickstart: ResNet-8 on 20 % of CIFAR-10 for 3 epochs, G′ case 1, threshold 1.0.

    python -m gradamp_jax.main --config configs/quickstart.py --workdir runs/quickstart

Offline, with the JPEG CIFAR-10 extracted to ~/data/cifar10-jpg:

    python -m gradamp_jax.main --config configs/quickstart.py --workdir runs/quickstart \
        --config.image_folder=~/data/cifar10-jpg

Epoch 1 trains without amplification, epoch 2 is the analysis epoch, epoch 3 amplifies
the selected layers by 2. Expected: under 3 minutes on a 2-core CPU and at least 35 %
test accuracy (see the README's results table for the measured run).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = "resnet8"
  config.train_split = "train[:20%]"
  config.phases = ((1, 0.1, 0, 1), (3, 0.1, 1, 2))
  config.amplification.measure = "G_prime"
  config.amplification.case = 1
  config.amplification.threshold = 1.0
  return config
