"""CIFAR input pipeline: whole splits read once into numpy, then held on the device as uint8.

Shuffles, crops and flips are drawn and applied on the device inside the jitted step, so nothing
crosses from the host during training (docs/data.md).
"""

from gradamp_jax.input_pipeline.dataset import (
  CIFAR10_CLASS_NAMES,
  CIFAR10_MEAN,
  CIFAR10_STD,
  CIFAR100_MEAN,
  CIFAR100_STD,
  channel_stats,
  hold_out_indices,
  load,
  load_for_seeds,
  steps_per_epoch,
)
from gradamp_jax.input_pipeline.device import (
  CROP_PADDING,
  DeviceSplit,
  EpochPlan,
  EvalSplit,
  epoch_plan,
  normalize_images,
  place,
  random_crop_flip,
  to_device,
  to_device_batches,
  train_batch,
)
from gradamp_jax.input_pipeline.image_folder import IMAGE_SUFFIXES, split_bounds
from gradamp_jax.input_pipeline.split import Dataset, Split
from gradamp_jax.input_pipeline.tfds_source import DATASETS
