"""Conv, BatchNorm and Dense constructors shared by the CIFAR models.

Conv padding (``k // 2``) and BatchNorm (``momentum=0.9``, ``epsilon=1e-5``) follow the PyTorch
reference implementations. Parameters are always float32; ``dtype`` sets the computation dtype.
"""

import jax.numpy as jnp
from flax import nnx

BATCH_NORM_MOMENTUM = 0.9
BATCH_NORM_EPSILON = 1e-5

# He (Kaiming) normal initialisation, fan-out mode, as in torchvision's ResNets.
CONV_KERNEL_INIT = nnx.initializers.variance_scaling(2.0, "fan_out", "normal")


def scaled(channels: int, width: float) -> int:
  """``channels`` times the width multiplier ``width``, rounded, at least 1."""
  return max(1, round(channels * width))


def conv(
  in_features: int,
  out_features: int,
  kernel_size: int,
  *,
  strides: int = 1,
  use_bias: bool,
  dtype: jnp.dtype,
  rngs: nnx.Rngs,
) -> nnx.Conv:
  """A 2D convolution with PyTorch-style padding ``kernel_size // 2``."""
  pad = kernel_size // 2
  return nnx.Conv(
    in_features,
    out_features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=((pad, pad), (pad, pad)),
    use_bias=use_bias,
    kernel_init=CONV_KERNEL_INIT,
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


def batch_norm(num_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.BatchNorm:
  """BatchNorm over the channel axis; running statistics are kept in float32.

  The mode is chosen per call (``use_running_average=not train``), never stored.
  """
  return nnx.BatchNorm(
    num_features,
    momentum=BATCH_NORM_MOMENTUM,
    epsilon=BATCH_NORM_EPSILON,
    dtype=dtype,
    param_dtype=jnp.float32,
    rngs=rngs,
  )


def dense(in_features: int, out_features: int, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> nnx.Linear:
  """The classifier layer (LeCun-normal kernel, zero bias)."""
  return nnx.Linear(in_features, out_features, dtype=dtype, param_dtype=jnp.float32, rngs=rngs)
