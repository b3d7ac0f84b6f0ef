"""A plain NumPy reading of the method and its measures (docs/method.md §3–5), written apart
from the JAX code.

It does not simulate a state machine: for every step it finds, from the strategy alone,
which analysis window governs the step and recomputes the selection from that window's
raw gradients.
"""

import numpy as np


def measure_g(window):
  """Eq. 4. ``window``: list over steps of lists of this layer's gradient arrays."""
  flat = np.concatenate([np.concatenate([np.ravel(a) for a in step]) for step in window])
  # Sum over steps first, then weights: same value, other order than the JAX code.
  per_weight = np.sum([np.concatenate([np.ravel(a) for a in step]) for step in window], axis=0)
  denominator = np.sum(np.abs(flat))
  return 0.0 if denominator == 0 else abs(np.sum(per_weight)) / denominator


def measure_g_prime(window):
  """Eq. 7: mean over weights of |Σ_j g| / Σ_j |g| (0 for a weight that never moved)."""
  steps = np.stack([np.concatenate([np.ravel(a) for a in step]) for step in window])
  numerator = np.abs(steps.sum(axis=0))
  denominator = np.abs(steps).sum(axis=0)
  ratios = [0.0 if d == 0 else n / d for n, d in zip(numerator, denominator)]
  return float(np.mean(ratios))


def measure_gsnr(window):
  """Gradient SNR (Liu et al. 2020): mean over weights of mean² / variance over the steps,
  the variance floored at float32's eps times the second moment (0 for a weight that never
  moved)."""
  steps = np.stack([np.concatenate([np.ravel(a) for a in step]) for step in window])
  steps = steps.astype(np.float64)
  mean, second = steps.mean(axis=0), np.square(steps).mean(axis=0)
  variance = np.maximum(second - mean**2, np.finfo(np.float32).eps * second)
  ratios = [0.0 if q == 0 else m**2 / v for m, q, v in zip(mean, second, variance)]
  return float(np.mean(ratios))


MEASURES = {"G": measure_g, "G_prime": measure_g_prime, "GSNR": measure_gsnr}


def zscore(values, eligible):
  values = np.asarray(values, np.float64)
  chosen = values[np.asarray(eligible)]
  std = chosen.std()
  if not np.isfinite(std) or std < 1e-6:
    return np.zeros_like(values)
  z = (values - chosen.mean()) / std
  return np.where(eligible, z, 0.0)


def decide(z, eligible, case, threshold):
  score = z if case == 1 else np.abs(z)
  return (score > threshold) & np.asarray(eligible)


def windows_of_phase(start, end, reselect_every):
  """1-based analysis epochs of an amplified phase covering epochs start..end."""
  period = reselect_every or (end - start + 1)
  return [w for w in range(start, end + 1, period) if w < end]


def expected_scales(
  phases,
  steps_per_epoch,
  grads,
  layer_of_leaf,
  num_layers,
  *,
  measure,
  case,
  threshold,
  reselect_every=None,
  eligible=None,
):
  """Per step, the factor applied to each layer. ``grads``: list over steps of leaf lists."""
  eligible = np.ones(num_layers, bool) if eligible is None else np.asarray(eligible)
  fn = MEASURES[measure]
  out = []
  for t in range(len(grads)):
    epoch = t // steps_per_epoch + 1
    scales = np.ones(num_layers)
    start = 1
    for end, _, is_amp, factor in phases:
      if start <= epoch <= end and is_amp:
        governing = [w for w in windows_of_phase(start, end, reselect_every) if w < epoch]
        if governing:
          w = governing[-1]
          steps = grads[(w - 1) * steps_per_epoch : w * steps_per_epoch]
          values = [
            fn([[g for g, owner in zip(step, layer_of_leaf) if owner == layer] for step in steps])
            for layer in range(num_layers)
          ]
          chosen = decide(zscore(values, eligible), eligible, case, threshold)
          scales = np.where(chosen, factor, 1.0)
      start = end + 1
    out.append(scales)
  return out


def epoch_measures(grads, steps_per_epoch, layer_of_leaf, num_layers):
  """G and G′ of every layer for every complete epoch: a list of (G, G′) arrays."""
  out = []
  for e in range(len(grads) // steps_per_epoch):
    steps = grads[e * steps_per_epoch : (e + 1) * steps_per_epoch]
    per_layer = [
      [[g for g, owner in zip(step, layer_of_leaf) if owner == layer] for step in steps]
      for layer in range(num_layers)
    ]
    out.append(
      (
        np.array([measure_g(w) for w in per_layer]),
        np.array([measure_g_prime(w) for w in per_layer]),
      )
    )
  return out


def expected_counts(
  phases,
  steps_per_epoch,
  grads,
  layer_of_leaf,
  num_layers,
  *,
  measure,
  case,
  threshold,
  reselect_every=None,
  eligible=None,
):
  """Per step, how many layers the measure's rule amplifies (what matched random copies)."""
  scales = expected_scales(
    phases,
    steps_per_epoch,
    grads,
    layer_of_leaf,
    num_layers,
    measure=measure,
    case=case,
    threshold=threshold,
    reselect_every=reselect_every,
    eligible=eligible,
  )
  return [int(np.sum(s != 1.0)) for s in scales]
