"""CIFAR input pipeline: whole splits read once into numpy, then held on the device as uint8.

CIFAR is small (the 50,000 training images are 150 MB as uint8), so each split is read once
into numpy and copied once to every device (:func:`to_device`). Each epoch's shuffle,
random crops (zero padding 4) and horizontal flips are drawn on the device from
``fold_in(key(seed), epoch)`` (:func:`epoch_plan`), so an epoch is a pure function of
(seed, epoch), and each batch is gathered, augmented and normalised inside the jitted
training step (:func:`train_batch`): nothing crosses from the host during training.
Evaluation splits sit on the device in padded batches (:func:`to_device_batches`).
TensorFlow is never imported here (TFDS reads its prepared array_record files without it),
so the pipeline cannot reserve accelerator memory.

Two sources (:func:`load`): TFDS ``cifar10`` / ``cifar100`` (fine labels), prepared once with
TensorFlow installed (``pip install "gradamp_jax[prepare]"``) on a machine with internet, or
a local image folder ``<root>/{train,test}/<class>/*.{jpg,jpeg,png}`` (the layout
``tfds.ImageFolder`` reads), decoded with PIL; class ids follow the sorted class names.

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
