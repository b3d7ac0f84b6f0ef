"""A convolution whose kernel gradient is one matrix product, ``im2col(x)ᵀ · dy`` (for CPUs).

XLA's CPU backend computes a convolution's kernel gradient far more slowly than the convolution
itself on some CPUs (BENCHMARKS.md); values equal the standard gradient up to float rounding.
Used with ``models.create(..., conv="im2col")`` (``--config.conv=im2col``); the default is lax's.
"""

import jax
import jax.numpy as jnp
from jax import lax

_LAYOUT = ("NHWC", "HWIO", "NHWC")


def conv_general_dilated(
  lhs,
  rhs,
  window_strides,
  padding,
  lhs_dilation=None,
  rhs_dilation=None,
  dimension_numbers=None,
  feature_group_count=1,
  precision=None,
  **kwargs,
):
  """Drop-in for ``lax.conv_general_dilated`` (as ``nnx.Conv(conv_general_dilated=...)``).

  Plain 2D NHWC/HWIO convolutions with explicit padding take the fast kernel gradient;
  anything else (dilation, groups, string padding, sharding hints) goes to
  ``lax.conv_general_dilated`` unchanged.
  """
  plain = (
    lhs.ndim == 4
    and feature_group_count == 1
    and not kwargs.get("out_sharding")
    and "preferred_element_type" not in kwargs
    and all(d == 1 for d in (lhs_dilation or (1, 1)))
    and all(d == 1 for d in (rhs_dilation or (1, 1)))
    and not isinstance(padding, str)
    and dimension_numbers in (None, lax.conv_dimension_numbers(lhs.shape, rhs.shape, _LAYOUT))
  )
  if not plain:
    return lax.conv_general_dilated(
      lhs,
      rhs,
      window_strides,
      padding,
      lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation,
      dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count,
      precision=precision,
      **kwargs,
    )
  padding = tuple(tuple(int(p) for p in pair) for pair in padding)
  return _conv(lhs, rhs, tuple(int(s) for s in window_strides), padding, precision)


def _plain_conv(x, kernel, strides, padding, precision):
  return lax.conv_general_dilated(
    x, kernel, strides, padding, dimension_numbers=_LAYOUT, precision=precision
  )


_conv = jax.custom_vjp(_plain_conv, nondiff_argnums=(2, 3, 4))


def _conv_fwd(x, kernel, strides, padding, precision):
  return _plain_conv(x, kernel, strides, padding, precision), (x, kernel)


def _conv_bwd(strides, padding, precision, residuals, dy):
  x, kernel = residuals
  _, input_vjp = jax.vjp(lambda x: _plain_conv(x, kernel, strides, padding, precision), x)
  (dx,) = input_vjp(dy)
  kh, kw, cin, cout = kernel.shape
  windows = im2col(x, (kh, kw), strides, padding, dy.shape[1:3])
  dkernel = windows.T @ dy.reshape(-1, cout).astype(windows.dtype)
  return dx, dkernel.reshape(kernel.shape).astype(kernel.dtype)


_conv.defvjp(_conv_fwd, _conv_bwd)


def im2col(x, window, strides, padding, out_hw):
  """Rows of ``(kh, kw, c)``-ordered input windows, one per output pixel: ``(N·Ho·Wo, kh·kw·C)``."""
  n, _, _, c = x.shape
  padded = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
  (sh, sw), (ho, wo) = strides, out_hw
  shifted = [
    lax.slice(
      padded, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1)
    )
    for i in range(window[0])
    for j in range(window[1])
  ]
  return jnp.stack(shifted, axis=3).reshape(n * ho * wo, window[0] * window[1] * c)
