"""Layer gradient directionality measures and the threshold rules (paper §3.2–3.6).

All functions are pure ``jax.numpy`` and run inside ``jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

MEASURES = ("G", "G_prime")
CASES = (1, 2)
STD_TOLERANCE = 1e-6


def _safe_ratio(numerator, denominator):
  """``numerator / denominator``; 0 where the denominator is 0, NaN where either is not
  finite (a non-finite gradient was accumulated)."""
  positive = denominator > 0
  ratio = jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)
  return jnp.where(jnp.isfinite(numerator) & jnp.isfinite(denominator), ratio, jnp.nan)


def directionality_g(signed_sum, abs_sum):
  """Layer gradient directionality ratio G (eq. 4).

  ``G_l = |Σ_i Σ_j g_lij| / Σ_i Σ_j |g_lij|``, 0 where the denominator is 0 (docs/method.md §3).

  Args:
    signed_sum: per layer, ``Σ_i Σ_j g_lij`` over its weights i and the window's steps j.
    abs_sum: per layer, ``Σ_i Σ_j |g_lij|``.

  Returns:
    ``G`` per layer, in [0, 1] (eq. 5); NaN for a layer whose sums are not finite.
  """
  return _safe_ratio(jnp.abs(signed_sum), abs_sum)


def weight_directionality(signed_sum, abs_sum):
  """Per-weight ratio ``r_li = |Σ_j g_lij| / Σ_j |g_lij|`` of eq. 7 (0 where never moved)."""
  return _safe_ratio(jnp.abs(signed_sum), abs_sum)


def directionality_g_prime(signed_sums, abs_sums, leaf_layer, num_layers):
  """Layer gradient directionality ratio G′ (eq. 7): the mean over weights of ``r_li``.

  Args:
    signed_sums: list of per-weight ``Σ_j g`` arrays, one per parameter leaf.
    abs_sums: list of per-weight ``Σ_j |g|`` arrays, same shapes.
    leaf_layer: layer index of each leaf.
    num_layers: number of layers.

  Returns:
    ``G′`` per layer, in [0, 1]; every weight of a layer counts equally. NaN for a
    layer with a non-finite sum.
  """
  totals = jnp.zeros((num_layers,), jnp.float32)
  counts = [0] * num_layers
  for s, a, layer in zip(signed_sums, abs_sums, leaf_layer):
    totals = totals.at[layer].add(jnp.sum(weight_directionality(s, a)))
    counts[layer] += s.size
  return totals / jnp.asarray([max(c, 1) for c in counts], jnp.float32)


def normalize(values, eligible):
  """Z-score across the eligible layers (eqs. 6 and 8), population std.

  Where the std is below 1e-6 or not finite (one eligible layer, all layers equal)
  every normalized value is 0, so nothing is selected for a positive threshold and
  nothing becomes NaN (docs/method.md §4). Ineligible layers get 0. An eligible layer whose
  measure is not finite (it saw a non-finite gradient) is left out of the mean and std
  and gets NaN, which no threshold rule selects.

  Args:
    values: measure per layer, shape ``(L,)``.
    eligible: bool per layer, shape ``(L,)``.

  Returns:
    ``Ĝ`` per layer, shape ``(L,)``.
  """
  values = jnp.asarray(values, jnp.float32)
  requested = jnp.asarray(eligible, bool)
  finite = jnp.isfinite(values)
  eligible = requested & finite
  values = jnp.where(finite, values, 0.0)
  count = jnp.maximum(jnp.sum(eligible), 1)
  mean = jnp.sum(jnp.where(eligible, values, 0.0)) / count
  var = jnp.sum(jnp.where(eligible, (values - mean) ** 2, 0.0)) / count
  std = jnp.sqrt(var)
  usable = jnp.isfinite(std) & (std >= STD_TOLERANCE)
  z = (values - mean) / jnp.where(usable, std, 1.0)
  return jnp.where(requested & ~finite, jnp.nan, jnp.where(usable & eligible, z, 0.0))


def select_layers(normalized, eligible, *, case: int, threshold: float):
  """The threshold rule of §3.6: case 1 ``Ĝ > t``; case 2 ``|Ĝ| > t``.

  Args:
    normalized: ``Ĝ`` per layer.
    eligible: bool per layer; ineligible layers are never selected.
    case: 1 or 2.
    threshold: the threshold ``t``.

  Returns:
    bool per layer: whether to amplify it.
  """
  check_case(case)
  score = normalized if case == 1 else jnp.abs(normalized)
  return (score > threshold) & jnp.asarray(eligible, bool)


def random_subset(key, eligible, count):
  """``count`` of the eligible layers, uniformly without replacement (docs/method.md §6).

  ``count`` may be a traced integer (the matched-random control).
  """
  eligible = jnp.asarray(eligible, bool)
  noise = jax.random.uniform(key, eligible.shape)
  noise = jnp.where(eligible, noise, 2.0)  # ineligible layers rank last
  ranks = jnp.argsort(jnp.argsort(noise))
  return ranks < count


def check_measure(measure: str) -> str:
  if measure not in MEASURES:
    raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
  return measure


def check_case(case: int) -> int:
  if isinstance(case, bool) or case not in CASES:
    raise ValueError(f"case must be one of {CASES}, got {case!r}")
  return int(case)
