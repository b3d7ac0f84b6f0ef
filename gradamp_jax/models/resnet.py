"""ResNets for 32x32 inputs, two families (docs/training.md describes them).

``resnet18/34/50/101`` (kuangliu/pytorch-cifar) and ``resnet8/20/32/44/56`` (He et al. 2016,
Sec. 4.2), with 1x1 conv + BatchNorm projection shortcuts and bias-free convolutions.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from gradamp_jax.models import common


class BasicBlock(nnx.Module):
  """Two 3x3 conv-BN layers with a residual connection (expansion 1)."""

  expansion = 1

  def __init__(self, in_features: int, features: int, stride: int, *, dtype, rngs: nnx.Rngs):
    self.conv1, self.bn1 = _conv_bn(in_features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.conv2, self.bn2 = _conv_bn(features, features, 3, dtype=dtype, rngs=rngs)
    _add_shortcut(self, in_features, features * self.expansion, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    y = self.bn2(self.conv2(y), use_running_average=not train)
    return nnx.relu(y + _shortcut(self, x, train=train))


class Bottleneck(nnx.Module):
  """1x1 reduce, 3x3 (strided), 1x1 expand, each with BN; expansion 4."""

  expansion = 4

  def __init__(self, in_features: int, features: int, stride: int, *, dtype, rngs: nnx.Rngs):
    out_features = features * self.expansion
    self.conv1, self.bn1 = _conv_bn(in_features, features, 1, dtype=dtype, rngs=rngs)
    self.conv2, self.bn2 = _conv_bn(features, features, 3, stride, dtype=dtype, rngs=rngs)
    self.conv3, self.bn3 = _conv_bn(features, out_features, 1, dtype=dtype, rngs=rngs)
    _add_shortcut(self, in_features, out_features, stride, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    y = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    y = nnx.relu(self.bn2(self.conv2(y), use_running_average=not train))
    y = self.bn3(self.conv3(y), use_running_average=not train)
    return nnx.relu(y + _shortcut(self, x, train=train))


def _conv_bn(in_features, out_features, kernel_size, stride=1, *, dtype, rngs):
  """A bias-free convolution and its BatchNorm, made in that order."""
  conv = common.conv(
    in_features, out_features, kernel_size, strides=stride, use_bias=False, dtype=dtype, rngs=rngs
  )
  return conv, common.batch_norm(out_features, dtype=dtype, rngs=rngs)


def _add_shortcut(block: nnx.Module, in_features: int, out_features: int, stride: int, **kwargs):
  """Gives ``block`` a 1x1 conv + BN projection if the shape changes, else ``None``s."""
  conv_bn = (None, None)
  if stride != 1 or in_features != out_features:
    conv_bn = _conv_bn(in_features, out_features, 1, stride, **kwargs)
  block.shortcut_conv, block.shortcut_bn = conv_bn


def _shortcut(block: nnx.Module, x: jax.Array, *, train: bool) -> jax.Array:
  if block.shortcut_conv is None:
    return x
  return block.shortcut_bn(block.shortcut_conv(x), use_running_average=not train)


class ResNet(nnx.Module):
  """A CIFAR ResNet: stem, ``len(stage_sizes)`` stages, global average pool, Dense.

  Args:
    block: ``BasicBlock`` or ``Bottleneck``.
    stage_sizes: number of blocks per stage; stage ``i`` is the attribute ``layer{i+1}``.
    widths: base channel count of each stage (times ``width``); the first is also the stem
      width. Every stage after the first halves the spatial size in its first block.
    num_classes, width, dtype, rngs: as :func:`gradamp_jax.models.create` takes them.
  """

  def __init__(
    self,
    block: type[BasicBlock] | type[Bottleneck],
    stage_sizes: Sequence[int],
    widths: Sequence[int],
    num_classes: int,
    *,
    width: float = 1.0,
    dtype=jnp.float32,
    rngs: nnx.Rngs,
  ):
    if len(stage_sizes) != len(widths):
      raise ValueError(
        f"stage_sizes {tuple(stage_sizes)} and widths {tuple(widths)} must have the same length"
      )
    widths = [common.scaled(w, width) for w in widths]
    self.conv1, self.bn1 = _conv_bn(3, widths[0], 3, dtype=dtype, rngs=rngs)
    in_features = widths[0]
    self.stage_names = tuple(f"layer{i + 1}" for i in range(len(stage_sizes)))
    for i, (num_blocks, features) in enumerate(zip(stage_sizes, widths)):
      blocks = []
      for j in range(num_blocks):
        stride = 2 if (i > 0 and j == 0) else 1
        blocks.append(block(in_features, features, stride, dtype=dtype, rngs=rngs))
        in_features = features * block.expansion
      setattr(self, self.stage_names[i], nnx.List(blocks))
    self.fc = common.dense(in_features, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps float NHWC images to logits; ``train`` selects batch vs running BN stats."""
    x = nnx.relu(self.bn1(self.conv1(x), use_running_average=not train))
    for name in self.stage_names:
      for block in getattr(self, name):
        x = block(x, train=train)
    return self.fc(jnp.mean(x, axis=(1, 2)))


def resnet_cifar(
  depth: int, num_classes: int, *, width: float = 1.0, dtype=jnp.float32, rngs: nnx.Rngs
) -> ResNet:
  """He et al. (2016) CIFAR ResNet of depth ``6n + 2`` (e.g. 20, 32, 44, 56, 110)."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, ...), got {depth}")
  n = (depth - 2) // 6
  return ResNet(
    BasicBlock, (n, n, n), (16, 32, 64), num_classes, width=width, dtype=dtype, rngs=rngs
  )
