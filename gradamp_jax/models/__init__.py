"""CIFAR model zoo (Flax NNX) and a name -> model registry.

Every model maps float NHWC images to logits, ``model(x, train=...)``, with ``train`` passed on
as ``use_running_average=not train`` to every BatchNorm; :func:`register` adds a model of your own.
"""

import functools
import inspect
import re
from collections.abc import Callable

import jax
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

# The built-in models; names() lists these and every registered one.
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

# How convolutions compute (:func:`create`'s ``conv``); conv="auto" in a config times both on
# the machine at hand and keeps the faster (gradamp_jax/training/conv_choice.py).
CONV_IMPLEMENTATIONS: dict[str, Callable] = {
  "lax": lax.conv_general_dilated,
  "im2col": conv_lib.conv_general_dilated,
}


def names() -> tuple[str, ...]:
  """Every model name :func:`create` takes: the built-in ones, then those registered."""
  return tuple(_BUILDERS)


def register(name: str, builder: Callable[..., nnx.Module], *, replace: bool = False) -> None:
  """Makes ``builder`` a model that :func:`create` (and ``config.model``) takes by ``name``.

  The contract, checked here on an abstract instance (shapes only, nothing computed):

  * ``builder(num_classes, *, dtype, rngs)`` returns an ``nnx.Module``: ``dtype`` is the
    computation dtype (parameters stay float32), ``rngs`` an ``nnx.Rngs`` with a
    ``params`` stream;
  * ``model(x, train)`` maps float NHWC images ``(N, 32, 32, 3)`` to logits
    ``(N, num_classes)`` of a floating dtype, in both modes;
  * its state is ``nnx.Param`` and ``nnx.BatchStat`` only (BatchNorm running statistics
    are ``nnx.BatchStat``; the training step splits the model into these two);
  * at least one layer owns a parameter named ``kernel`` (what ``eligible="kernels"``
    selects: convolutions and dense layers, not normalisation);
  * optionally, a keyword ``width`` (a positive float, 1 by default): the width multiplier
    that ``config.width`` sets; a builder without it runs at ``width=1`` only.

  Convolutions built as ``nnx.Conv`` follow ``config.conv`` (``im2col`` or ``lax``); others
  always compute as they are written. A layer is a parameter's path less its last key
  (docs/method.md §2).

  Args:
    name: letters, digits, ``_``, ``-`` or ``.``.
    builder: the model's constructor, as above.
    replace: allow re-registering an existing name (a built-in one included).

  Raises:
    ValueError: a bad or taken ``name``, or a model that breaks the contract (says how).

  >>> class Tiny(nnx.Module):
  ...   def __init__(self, num_classes, *, dtype, rngs):
  ...     self.conv = nnx.Conv(3, 8, (3, 3), dtype=dtype, rngs=rngs)
  ...     self.bn = nnx.BatchNorm(8, dtype=dtype, rngs=rngs)
  ...     self.head = nnx.Linear(8, num_classes, dtype=dtype, rngs=rngs)
  ...   def __call__(self, x, train):
  ...     x = nnx.relu(self.bn(self.conv(x), use_running_average=not train))
  ...     return self.head(x.mean(axis=(1, 2)))
  >>> register("tiny_cnn", Tiny)
  >>> create("tiny_cnn", num_classes=10)(jnp.zeros((2, 32, 32, 3)), train=False).shape
  (2, 10)
  >>> register("tiny_cnn", Tiny)
  Traceback (most recent call last):
  ...
  ValueError: model 'tiny_cnn' is registered already (replace=True to replace it)
  """
  if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
    raise ValueError(f"model name {name!r}: letters, digits, '_', '-' or '.' only")
  if name in _BUILDERS and not replace:
    raise ValueError(f"model {name!r} is registered already (replace=True to replace it)")
  if not callable(builder):
    raise ValueError(f"model {name!r}: the builder must be callable, got {builder!r}")
  num_classes = 10
  model = nnx.eval_shape(lambda: builder(num_classes, dtype=jnp.float32, rngs=nnx.Rngs(params=0)))
  problem = contract_problem(model, num_classes)
  if problem:
    raise ValueError(f"model {name!r} breaks the model contract: {problem}")
  _BUILDERS[name] = builder


def contract_problem(model, num_classes: int) -> str | None:
  """What ``model`` (real or abstract) breaks of :func:`register`'s contract; None if nothing."""
  if not isinstance(model, nnx.Module):
    return f"the builder returned a {type(model).__name__}, not an nnx.Module"
  graphdef, params, stats, rest = nnx.split(model, nnx.Param, nnx.BatchStat, ...)
  if jax.tree.leaves(rest):
    kinds = sorted({type(v).__name__ for _, v in nnx.to_flat_state(rest)})
    return f"its state holds {', '.join(kinds)} besides nnx.Param and nnx.BatchStat"
  if not any(path[-1] == "kernel" for path, _ in nnx.to_flat_state(params)):
    return "no parameter is named 'kernel' (eligible='kernels' would select no layer)"
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  for train in (True, False):
    forward = lambda p, s, x, train=train: nnx.merge(graphdef, p, s, rest)(x, train=train)
    try:
      out = jax.eval_shape(forward, params, stats, x)
    except Exception as e:  # whatever the model raises, said in one line
      return f"model(x, train={train}) on {x.shape} images raises {type(e).__name__}: {e}"
    if out.shape != (2, num_classes) or not jnp.issubdtype(out.dtype, jnp.floating):
      return (
        f"model(x, train={train}) gives {out.dtype}{list(out.shape)}, not (2, {num_classes}) logits"
      )
  return None


def create(
  name: str,
  num_classes: int,
  *,
  seed: int = 0,
  dtype=jnp.float32,
  conv: str = "lax",
  width: float = 1.0,
) -> nnx.Module:
  """Builds a freshly initialised model.

  Args:
    name: one of :func:`names` (built-in, or added by :func:`register`).
    num_classes: size of the classifier output.
    seed: seed of the parameter initialisation.
    dtype: computation dtype, e.g. ``jnp.bfloat16`` for mixed precision. Parameters and
      BatchNorm running statistics are float32 whatever ``dtype`` is; logits have ``dtype``.
    conv: one of ``CONV_IMPLEMENTATIONS``: ``"lax"`` (``lax.conv_general_dilated``, every
      backend) or ``"im2col"`` (the kernel gradient as one matrix product, for CPUs where
      XLA's kernel-gradient convolution is slow; faster on some CPUs, slower on others).
    width: width multiplier of the channels (``config.width``; 0.25: VGG 16-128 channels),
      for the built-in models and registered builders that take a ``width`` keyword.

  Returns:
    The model, an ``nnx.Module`` called as ``model(x, train=bool)``.

  Raises:
    ValueError: unknown ``name`` or ``conv``, non-positive ``num_classes`` or ``width``,
      a ``width`` other than 1 for a builder without one, or non-float ``dtype``.
  """
  if name not in _BUILDERS:
    raise ValueError(f"Unknown model name {name!r}; known models: {', '.join(names())}")
  if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
    raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
  if not jnp.issubdtype(dtype, jnp.floating):
    raise ValueError(
      f"dtype must be a floating point dtype (e.g. jnp.float32, jnp.bfloat16), got {dtype!r}"
    )
  if conv not in CONV_IMPLEMENTATIONS:
    raise ValueError(f"Unknown conv {conv!r}; known: {', '.join(CONV_IMPLEMENTATIONS)}")
  builder, scale = _BUILDERS[name], _width_kwargs(name, width)
  model = builder(num_classes, **scale, dtype=dtype, rngs=nnx.Rngs(params=seed))
  for _, module in nnx.iter_graph(model):
    if isinstance(module, nnx.Conv):
      module.conv_general_dilated = CONV_IMPLEMENTATIONS[conv]
  return model


def _width_kwargs(name: str, width: float) -> dict:
  """``{"width": width}`` for a builder that takes it; ``{}`` at width 1 for one that does not."""
  if isinstance(width, bool) or not isinstance(width, int | float) or width <= 0:
    raise ValueError(f"width must be a positive number, got {width!r}")
  builder = _BUILDERS[name]
  while isinstance(builder, functools.partial):
    builder = builder.func
  signature = inspect.signature(builder.__init__ if isinstance(builder, type) else builder)
  if "width" in signature.parameters:
    return {"width": float(width)}
  if width != 1:
    raise ValueError(f"model {name!r} takes no width multiplier (its builder has no 'width')")
  return {}


__all__ = ["MODEL_NAMES", "CONV_IMPLEMENTATIONS", "create", "names", "register", "contract_problem"]
__all__ += ["ResNet", "BasicBlock", "Bottleneck", "VGG", "resnet_cifar"]
