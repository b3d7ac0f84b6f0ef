"""Training data on the device: held as uint8, shuffled, cropped, flipped and normalised
inside the jitted step."""

from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from gradamp_jax.input_pipeline.dataset import steps_per_epoch
from gradamp_jax.input_pipeline.split import Split

CROP_PADDING = 4


class DeviceSplit(NamedTuple):
  """A training split on the device(s), replicated: ``images`` uint8 (N, H, W, 3), ``labels``
  int32 (N,). Batches are gathered from it inside the jitted step."""

  images: jax.Array
  labels: jax.Array


class EvalSplit(NamedTuple):
  """An evaluation split on the device(s) in batches sharded along the batch axis: ``images``
  uint8 (num_batches, B, H, W, 3), ``labels`` and ``mask`` (num_batches, B); mask 0: padding."""

  images: jax.Array
  labels: jax.Array
  mask: jax.Array


class EpochPlan(NamedTuple):
  """An epoch's randomness, (steps, B) per example: ``order`` (indices into the split),
  ``offsets`` (steps, B, 2) crop corners and ``flips``."""

  order: jax.Array
  offsets: jax.Array
  flips: jax.Array


def place(array, sharding: jax.sharding.Sharding) -> jax.Array:
  """``array`` (every process holds it whole) as a ``jax.Array`` with ``sharding``; unlike
  ``jax.device_put``, the processes' copies are not compared (NaN never compares equal)."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _replicated(mesh: Mesh | None) -> jax.sharding.Sharding:
  if mesh is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return NamedSharding(mesh, PartitionSpec())


def to_device(split: Split, mesh: Mesh | None = None) -> DeviceSplit:
  """Copies ``split`` as uint8 to every device of ``mesh`` (one device without a mesh)."""
  sharding = _replicated(mesh)
  return DeviceSplit(place(split.images, sharding), place(split.labels, sharding))


def to_device_batches(split: Split, batch_size: int, mesh: Mesh | None = None) -> EvalSplit:
  """Every example of ``split`` once, in order, as an :class:`EvalSplit` over ``mesh``."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = len(split)
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  images = np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]), np.uint8)])
  labels = np.concatenate([split.labels, np.zeros(pad, np.int32)])
  mask = np.r_[np.ones(n, np.float32), np.zeros(pad, np.float32)]
  batched = lambda x: x.reshape(num_batches, batch_size, *x.shape[1:])
  if mesh is None:
    sharding = _replicated(None)
  elif batch_size % mesh.shape["data"]:
    raise ValueError(
      f"batch_size {batch_size} does not split evenly over the "
      f"{mesh.shape['data']} devices of the mesh"
    )
  else:
    sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
  return EvalSplit(*(place(batched(x), sharding) for x in (images, labels, mask)))


def epoch_plan(seed, epoch, *, num_examples: int, batch_size: int) -> EpochPlan:
  """The shuffle, crop corners and flips of an epoch: a pure function of (seed, epoch).

  From ``fold_in(key(seed), epoch)``: a permutation (the last incomplete batch dropped),
  crop corners uniform in [0, 2 * CROP_PADDING], flips with probability 1/2. Jit-able.
  """
  steps = steps_per_epoch(num_examples, batch_size)
  if steps == 0:
    raise ValueError(
      f"batch_size {batch_size} exceeds the {num_examples} examples; an epoch would be empty"
    )
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  order_key, offset_key, flip_key = jax.random.split(key, 3)
  order = jax.random.permutation(order_key, num_examples)[: steps * batch_size]
  offsets = jax.random.randint(offset_key, (steps, batch_size, 2), 0, 2 * CROP_PADDING + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (steps, batch_size))
  return EpochPlan(order.reshape(steps, batch_size).astype(jnp.int32), offsets, flips)


def random_crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array) -> jax.Array:
  """Crops each of ``images`` (B, H, W, C) out of its copy zero-padded by ``CROP_PADDING`` at
  the corner ``offsets`` (B, 2) gives, then mirrors those ``flips`` (B,) selects."""
  b, h, w, _ = images.shape
  p = CROP_PADDING
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
  rows = offsets[:, 0, None] + jnp.arange(h)
  cols = offsets[:, 1, None] + jnp.arange(w)
  cols = jnp.where(flips[:, None], cols[:, ::-1], cols)
  return padded[jnp.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def normalize_images(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """uint8 images -> float32 ``(x / 255 - mean) / std`` (per channel, [0, 1] pixel units)."""
  mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
  if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
    raise ValueError(
      f"mean and std must be 3 per-channel values with std > 0, got mean={mean}, std={std}"
    )
  return images.astype(jnp.float32) * (1.0 / (255.0 * std)) - mean / std


def train_batch(data: DeviceSplit, plan: EpochPlan, step, mean, std) -> dict:
  """Batch ``step`` of the epoch ``plan`` describes: gathered, cropped, flipped and
  normalised on the device (jit-able; ``step`` may be traced)."""
  indices = plan.order[step]
  images = random_crop_flip(data.images[indices], plan.offsets[step], plan.flips[step])
  return {"image": normalize_images(images, mean, std), "label": data.labels[indices]}
