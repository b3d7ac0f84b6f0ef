"""VGG for 32x32 inputs (the common CIFAR variant, as in kuangliu/pytorch-cifar; docs/training.md).

Parameter paths read like ``('features', 3, 'conv', 'kernel')`` and ``('fc', 'kernel')``.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gradamp_jax.models import common

# Output channels of each convolution, grouped by stage (a max-pool follows each stage).
STAGES = {
  "vgg11": ((64,), (128,), (256,) * 2, (512,) * 2, (512,) * 2),
  "vgg13": ((64,) * 2, (128,) * 2, (256,) * 2, (512,) * 2, (512,) * 2),
  "vgg16": ((64,) * 2, (128,) * 2, (256,) * 3, (512,) * 3, (512,) * 3),
  "vgg19": ((64,) * 2, (128,) * 2, (256,) * 4, (512,) * 4, (512,) * 4),
}


class ConvBN(nnx.Module):
  """3x3 conv (with bias) -> BatchNorm -> ReLU."""

  def __init__(self, in_features: int, out_features: int, *, dtype, rngs: nnx.Rngs):
    self.conv = common.conv(in_features, out_features, 3, use_bias=True, dtype=dtype, rngs=rngs)
    self.bn = common.batch_norm(out_features, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    return nnx.relu(self.bn(self.conv(x), use_running_average=not train))


class VGG(nnx.Module):
  """A CIFAR VGG.

  Args:
    stages: output channels of each convolution, one tuple per stage (see ``STAGES``),
      each multiplied by ``width`` (:func:`common.scaled`).
    num_classes, width, dtype, rngs: as :func:`gradamp_jax.models.create` takes them.
  """

  def __init__(
    self,
    stages: Sequence[Sequence[int]],
    num_classes: int,
    *,
    width: float = 1.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    blocks, pool_after = [], []
    in_features = 3
    for stage in stages:
      for i, channels in enumerate(stage):
        out_features = common.scaled(channels, width)
        blocks.append(ConvBN(in_features, out_features, dtype=dtype, rngs=rngs))
        pool_after.append(i == len(stage) - 1)
        in_features = out_features
    self.features = nnx.List(blocks)
    self.pool_after = tuple(pool_after)
    self.fc = common.dense(in_features, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps float NHWC images to logits; ``train`` selects batch vs running BN stats."""
    for block, pool in zip(self.features, self.pool_after, strict=True):
      x = block(x, train=train)
      if pool:
        x = nnx.max_pool(x, (2, 2), strides=(2, 2))
    # 32x32 inputs are 1x1 here; the mean also accepts other sizes divisible by 32.
    return self.fc(jnp.mean(x, axis=(1, 2)))
