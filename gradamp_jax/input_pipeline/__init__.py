"""CIFAR input pipeline: whole splits read once into numpy, then held on the device as uint8.

Each split is read once into numpy and copied once to every device (:func:`to_device`). An
epoch's shuffle, crops and flips are drawn on the device from ``fold_in(key(seed), epoch)``
(:func:`epoch_plan`) and each batch is gathered, augmented and normalised inside the jitted
step (:func:`train_batch`): nothing crosses from the host during training. TensorFlow is
never imported here. Sources (:func:`load`): TFDS ``cifar10`` / ``cifar100``, or a local
image folder (docs/data.md).

Example::

  data = input_pipeline.load("cifar10")
  train = input_pipeline.to_device(data.train)
  plan = input_pipeline.epoch_plan(0, 1, num_examples=len(data.train), batch_size=128)
  batch = input_pipeline.train_batch(train, plan, 0, data.mean, data.std)
  # batch["image"]: float32 (128, 32, 32, 3), batch["label"]: int32 (128,)
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
