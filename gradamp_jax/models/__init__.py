"""CIFAR model zoo (Flax NNX) and a name -> model registry.

Every model maps float NHWC images to logits: ``model(x, train=...)``. ``train`` is passed
on as ``use_running_average=not train`` to every BatchNorm, so a functional training step
can ``nnx.split(model, nnx.Param, nnx.BatchStat)`` / ``nnx.merge`` without switching modes.

Example::

  model = models.create("resnet20", num_classes=10, seed=0)
  logits = model(images, train=True)
"""

import functools
from collections.abc import Callable

import jax.numpy as jnp
from flax import nnx
from jax import lax

from gradamp_jax.models import conv as conv_lib
from gradamp_jax.models.resnet import BasicBlock, Bottleneck, ResNet, resnet_cifar
from gradamp_jax.models.vgg import STAGES as VGG_STAGES
from gradamp_jax.models.vgg import VGG

_IMAGENET_STYLE_WIDTHS = (64, 128, 256, 512)

_BUILDERS: dict[str, Callable[..., nnx.Module]] = {
  **{name: functools.partial(VGG, stages) for name, stages in VGG_STAGES.items()},
  "resnet18": functools.partial(ResNet, BasicBlock, (2, 2, 2, 2), _IMAGENET_STYLE_WIDTHS),
  "resnet34": functools.partial(ResNet, BasicBlock, (3, 4, 6, 3), _IMAGENET_STYLE_WIDTHS),
  "resnet50": functools.partial(ResNet, Bottleneck, (3, 4, 6, 3), _IMAGENET_STYLE_WIDTHS),
  "resnet101": functools.partial(ResNet, Bottleneck, (3, 4, 23, 3), _IMAGENET_STYLE_WIDTHS),
  **{f"resnet{d}": functools.partial(resnet_cifar, d) for d in (8, 20, 32, 44, 56)},
}

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

# How convolutions compute: XLA's own, or with the kernel gradient as one im2col matrix
# product (models/conv.py; the same values up to rounding). Which is faster depends on the
# CPU, so it is a choice: conv="auto" times both on the machine at hand and keeps the faster
# (gradamp_jax/training/conv_choice.py).
CONV_IMPLEMENTATIONS: dict[str, Callable] = {
  "lax": lax.conv_general_dilated,
  "im2col": conv_lib.conv_general_dilated,
}


def create(
  name: str, num_classes: int, *, seed: int = 0, dtype=jnp.float32, conv: str = "lax"
) -> nnx.Module:
  """Builds a freshly initialised model.

  Args:
    name: one of ``MODEL_NAMES``.
    num_classes: size of the classifier output.
    seed: seed of the parameter initialisation.
    dtype: computation dtype, e.g. ``jnp.bfloat16`` for mixed precision. Parameters and
      BatchNorm running statistics are float32 whatever ``dtype`` is; logits have ``dtype``.
    conv: one of ``CONV_IMPLEMENTATIONS``: ``"lax"`` (``lax.conv_general_dilated``, every
      backend) or ``"im2col"`` (the kernel gradient as one matrix product, for CPUs where
      XLA's kernel-gradient convolution is slow; faster on some CPUs, slower on others).

  Returns:
    The model, an ``nnx.Module`` called as ``model(x, train=bool)``.

  Raises:
    ValueError: unknown ``name`` or ``conv``, non-positive ``num_classes`` or non-float
      ``dtype``.
  """
  if name not in _BUILDERS:
    raise ValueError(f"Unknown model name {name!r}; known models: {', '.join(MODEL_NAMES)}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
      f"dtype must be a floating point dtype (e.g. jnp.float32, jnp.bfloat16), got {dtype!r}"
    )
  if conv not in CONV_IMPLEMENTATIONS:
    raise ValueError(f"Unknown conv {conv!r}; known: {', '.join(CONV_IMPLEMENTATIONS)}")
  model = _BUILDERS[name](num_classes, dtype=dtype, rngs=nnx.Rngs(params=seed))
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = CONV_IMPLEMENTATIONS[conv]
  return model


__all__ = [
  "MODEL_NAMES",
  "CONV_IMPLEMENTATIONS",
  "create",
  "ResNet",
  "BasicBlock",
  "Bottleneck",
  "VGG",
  "resnet_cifar",
]
