"""Per-layer selection measures and the threshold rules (paper §3.2–3.6).

A measure is one :class:`Measure` in :data:`MEASURES`; one's own is one :func:`register` call
(docs/method.md §3). All functions are pure ``jax.numpy`` and run inside ``jit``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

CASES = (1, 2, 3)
# The threshold rules by case: the paper's cases 1 and 2, and the lower tail.
CASE_RULES = {1: "upper tail: Ĝ > t", 2: "two-sided: |Ĝ| > t", 3: "lower tail: Ĝ < −t"}
STD_TOLERANCE = 1e-6

# The per-parameter sums a measure may need over a window: what each step adds.
SUMS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "signed_sum": lambda g: g,  # Σ_j g
  "abs_sum": jnp.abs,  # Σ_j |g|
  "square_sum": jnp.square,  # Σ_j g²
}


def _safe_ratio(numerator, denominator):
  """0 where the denominator is 0; NaN where either is not finite."""
  positive = denominator > 0
  ratio = jnp.where(positive, numerator / jnp.where(positive, denominator, 1.0), 0.0)
  return jnp.where(jnp.isfinite(numerator) & jnp.isfinite(denominator), ratio, jnp.nan)


def directionality_g(signed_sum, abs_sum):
  """Layer gradient directionality ratio G (eq. 4): ``|Σ_i Σ_j g_lij| / Σ_i Σ_j |g_lij|``.

  Args:
    signed_sum, abs_sum: per layer, ``Σ_i Σ_j g_lij`` and ``Σ_i Σ_j |g_lij|`` over its
      weights i and the window's steps j.

  Returns:
    ``G`` per layer, in [0, 1] (eq. 5); 0 where the denominator is 0, NaN where a sum is not
    finite.
  """
  return _safe_ratio(jnp.abs(signed_sum), abs_sum)


def directionality_g_prime(signed_sums, abs_sums, leaf_layer, num_layers):
  """Layer gradient directionality ratio G′ (eq. 7): the mean over weights of
  ``r_li = |Σ_j g_lij| / Σ_j |g_lij|`` (0 for a weight that never moved).

  Args:
    signed_sums, abs_sums: per-weight ``Σ_j g`` and ``Σ_j |g|`` arrays, one per leaf.
    leaf_layer, num_layers: each leaf's layer index, and the number of layers.

  Returns:
    ``G′`` per layer, in [0, 1]; NaN for a layer with a non-finite sum.
  """
  ratios = [_safe_ratio(jnp.abs(s), a) for s, a in zip(signed_sums, abs_sums)]
  return layer_mean(ratios, leaf_layer, num_layers)


def layer_sum(leaves, leaf_layer, num_layers):
  """Per layer ``(L,)`` float32, the sum of its leaves' elements (one segment sum)."""
  per_leaf = jnp.stack([jnp.sum(leaf.astype(jnp.float32)) for leaf in leaves])
  return jax.ops.segment_sum(per_leaf, jnp.asarray(leaf_layer, jnp.int32), num_layers)


def layer_mean(per_weight, leaf_layer, num_layers):
  """Per layer, the mean of per-weight values over all its weights."""
  counts = [0] * num_layers
  for values, layer in zip(per_weight, leaf_layer):
    counts[layer] += values.size
  totals = layer_sum(per_weight, leaf_layer, num_layers)
  return totals / jnp.asarray([max(c, 1) for c in counts], jnp.float32)


def gradient_snr(signed_sums, square_sums, steps: int, leaf_layer, num_layers):
  """Gradient signal-to-noise ratio (Liu et al., ICLR 2020), averaged over each layer's
  weights: ``r_i = μ_i² / σ_i²`` with ``μ_i = Σ_j g / m``, ``σ_i² = Σ_j g² / m − μ_i²``.

  A weight whose gradient was always 0 gets 0. The variance is floored at ``eps · Σ_j g² / m``
  (``eps = 2⁻²³``), so a constant non-zero gradient gets ``1/eps ≈ 8.4e6``, never inf.

  Args:
    signed_sums, square_sums: per-weight ``Σ_j g`` and ``Σ_j g²`` arrays, one per leaf.
    steps: the number m of steps summed.
    leaf_layer, num_layers: as in :func:`directionality_g_prime`.

  Returns:
    GSNR per layer, >= 0; NaN for a layer with a non-finite sum.
  """
  eps = jnp.finfo(jnp.float32).eps
  ratios = []
  for s, q in zip(signed_sums, square_sums):
    mean, second = s / steps, q / steps
    variance = jnp.maximum(second - mean**2, eps * second)
    ratio = jnp.where(second > 0, mean**2 / jnp.where(second > 0, variance, 1.0), 0.0)
    ratios.append(jnp.where(jnp.isfinite(s) & jnp.isfinite(q), ratio, jnp.nan))
  return layer_mean(ratios, leaf_layer, num_layers)


class Window(NamedTuple):
  """The sums of one window of steps, as a :class:`Measure` reads them.

  Attributes:
    sums: sum name (:data:`SUMS`) -> per-weight leaves or, without ``per_weight``, per-layer
      totals ``(L,)``.
    per_weight: whether ``sums`` are per weight.
    steps: number of steps summed.
    leaf_layer, num_layers: each leaf's layer index, and the number of layers.
  """

  sums: dict
  per_weight: bool
  steps: int
  leaf_layer: Sequence[int]
  num_layers: int

  def layer_totals(self, name: str) -> jax.Array:
    """Per-layer total ``(L,)`` of sum ``name`` over the layer's weights."""
    sums = self.sums[name]
    return layer_sum(sums, self.leaf_layer, self.num_layers) if self.per_weight else sums

  def weights(self, name: str) -> list:
    """Per-weight leaves of sum ``name`` (only when ``per_weight``)."""
    if not self.per_weight:
      raise ValueError(f"sum {name!r} is kept per layer; this measure needs it per weight")
    return self.sums[name]

  def layer_means(self, name: str) -> jax.Array:
    """Per-layer mean ``(L,)`` of sum ``name`` over the layer's weights (``per_weight``)."""
    return layer_mean(self.weights(name), self.leaf_layer, self.num_layers)


class Measure(NamedTuple):
  """A per-layer statistic of a window's raw gradients that selection can threshold.

  Attributes:
    name: its key in configs, optimizer state and output columns.
    label: how figures and reports print it.
    sums: the :data:`SUMS` it needs over a window.
    per_weight: whether it needs those sums per weight (else per-layer totals).
    value: ``value(window) -> (L,)`` float32 per-layer values (NaN where sums are not finite).
    reference: where it is defined; an equation named last (``"…, eq. 7"``) labels axes.
    bounds: ``(low, high)``, the range of its values, or ``None`` when unbounded.
  """

  name: str
  label: str
  sums: tuple[str, ...]
  per_weight: bool
  value: Callable[[Window], jax.Array]
  reference: str
  bounds: Optional[tuple[float, float]] = None


MEASURES: dict[str, Measure] = {
  m.name: m
  for m in (
    Measure(
      "G",
      "G",
      ("signed_sum", "abs_sum"),
      False,
      lambda w: directionality_g(w.layer_totals("signed_sum"), w.layer_totals("abs_sum")),
      "Basodi et al. 2023, eq. 4",
      (0.0, 1.0),
    ),
    Measure(
      "G_prime",
      "G′",
      ("signed_sum", "abs_sum"),
      True,
      lambda w: directionality_g_prime(
        w.weights("signed_sum"), w.weights("abs_sum"), w.leaf_layer, w.num_layers
      ),
      "Basodi et al. 2023, eq. 7",
      (0.0, 1.0),
    ),
    Measure(
      "GSNR",
      "GSNR",
      ("signed_sum", "square_sum"),
      True,
      lambda w: gradient_snr(
        w.weights("signed_sum"), w.weights("square_sum"), w.steps, w.leaf_layer, w.num_layers
      ),
      "Liu et al., ICLR 2020 (gradient signal-to-noise ratio)",
    ),
  )
}
DEFAULT_TRACKED = ("G", "G_prime")
_BUILT_IN = frozenset(MEASURES)


def register(measure: Measure, *, replace: bool = False) -> Measure:
  """Adds a measure of one's own to :data:`MEASURES`, from one's own code or config file.

  Then it is a measure like G for selection, tracking, configs, forks and figures (a config
  file that registers it at import makes every process know it). ``value`` must be
  traceable ``jax.numpy``; any scale will do. ``replace``: of a registered, not built-in, one.

  Raises:
    ValueError: for a bad field (named), or a name already registered.

  Example:
    >>> from gradamp_jax import measures
    >>> mean_abs = measures.register(measures.Measure(
    ...     "mean_abs", "mean |g|", sums=("abs_sum",), per_weight=True,
    ...     value=lambda w: w.layer_means("abs_sum") / w.steps,
    ...     reference="mean absolute gradient per weight"), replace=True)
    >>> "mean_abs" in measures.MEASURES
    True
    >>> _ = measures.MEASURES.pop("mean_abs")  # (this example leaves MEASURES as it was)
  """
  _check_definition(measure)
  name = measure.name
  if name in _BUILT_IN:
    raise ValueError(f"measure {name!r} is already built-in")
  if name in MEASURES and not replace:
    raise ValueError(f"measure {name!r} is already registered; pass replace=True to replace it")
  MEASURES[name] = measure
  return measure


def _check_definition(m) -> None:
  if not isinstance(m, Measure):
    raise ValueError(f"register takes a measures.Measure, got {type(m).__name__}")
  sums_ok = isinstance(m.sums, (tuple, list)) and bool(m.sums) and all(s in SUMS for s in m.sums)
  checks = {  # field: (valid, what it must be)
    "name": (isinstance(m.name, str) and m.name.isidentifier(), "a Python identifier"),
    "label": (isinstance(m.label, str) and bool(m.label), "a non-empty string"),
    "sums": (sums_ok, f"a non-empty tuple of {tuple(SUMS)}"),
    "per_weight": (isinstance(m.per_weight, bool), "True or False"),
    "value": (callable(m.value), "a function of a Window"),
    "reference": (isinstance(m.reference, str), "a string"),
    "bounds": (m.bounds is None or _is_range(m.bounds), "None or (low, high) with low < high"),
  }
  for field, (ok, allowed) in checks.items():
    if not ok:
      raise ValueError(f"Measure.{field}: must be {allowed}, got {getattr(m, field)!r}")


def _is_range(bounds) -> bool:
  try:
    low, high = (float(b) for b in bounds)
  except (TypeError, ValueError):
    return False
  return low < high  # False where either is NaN


def label(name: str) -> str:
  """A measure's label (its name for an unknown one)."""
  return MEASURES[name].label if name in MEASURES else name


def axis_label(name: str) -> str:
  """A measure's label with the equation its reference names last, e.g. ``G′ (eq. 7)``."""
  if name not in MEASURES:
    return name
  last = MEASURES[name].reference.split(", ")[-1]
  return f"{label(name)} ({last})" if last.startswith("eq.") else label(name)


def bounds(name: str) -> Optional[tuple[float, float]]:
  """A measure's ``(low, high)``, or None when unbounded or unknown."""
  return MEASURES[name].bounds if name in MEASURES else None


def tracked_set(names: Sequence[str]) -> tuple[str, ...]:
  """Measure names, checked and in :data:`MEASURES` order (one state layout per set)."""
  names = [check_measure(n) for n in names]
  if not names:
    raise ValueError("at least one measure must be tracked")
  return tuple(n for n in MEASURES if n in names)


def needed_sums(names: Sequence[str]) -> tuple[tuple[str, ...], bool]:
  """The sums a set of measures needs (in :data:`SUMS` order) and whether per weight."""
  needed = {s for n in names for s in MEASURES[n].sums}
  return (tuple(s for s in SUMS if s in needed), any(MEASURES[n].per_weight for n in names))


def normalize(values, eligible):
  """Z-score across the eligible layers (eqs. 6 and 8), population std.

  Where the std is below 1e-6 or not finite every value is 0 (docs/method.md §4);
  ineligible layers get 0. An eligible layer with a non-finite measure is left out of the
  mean and std and gets NaN, which no threshold rule selects.

  Args:
    values, eligible: the measure and a bool per layer, ``(L,)``.

  Returns:
    ``Ĝ`` per layer, ``(L,)``.
  """
  values = jnp.asarray(values, jnp.float32)
  requested = jnp.asarray(eligible, bool)
  finite = jnp.isfinite(values)
  eligible = requested & finite
  values = jnp.where(finite, values, 0.0)
  count = jnp.maximum(jnp.sum(eligible), 1)
  mean = jnp.sum(jnp.where(eligible, values, 0.0)) / count
  std = jnp.sqrt(jnp.sum(jnp.where(eligible, (values - mean) ** 2, 0.0)) / count)
  usable = jnp.isfinite(std) & (std >= STD_TOLERANCE)
  z = (values - mean) / jnp.where(usable, std, 1.0)
  return jnp.where(requested & ~finite, jnp.nan, jnp.where(usable & eligible, z, 0.0))


def select_layers(normalized, eligible, *, case: int, threshold: float):
  """The threshold rules: the paper's (§3.6) case 1 ``Ĝ > t`` and case 2 ``|Ĝ| > t``, and
  case 3 ``Ĝ < −t`` (the least directional layers).

  Args:
    normalized, eligible: ``Ĝ`` and a bool per layer; NaN and ineligible: never selected.
    case, threshold: 1, 2 or 3 (:data:`CASE_RULES`), and ``t``.

  Returns:
    bool per layer: whether the selection takes it.
  """
  check_case(case)
  score = {1: normalized, 2: jnp.abs(normalized), 3: -normalized}[int(case)]
  return (score > threshold) & jnp.asarray(eligible, bool)


def random_subset(key, eligible, count):
  """``count`` (maybe traced) of the eligible layers, uniformly without replacement."""
  eligible = jnp.asarray(eligible, bool)
  noise = jax.random.uniform(key, eligible.shape)
  noise = jnp.where(eligible, noise, 2.0)  # ineligible layers rank last
  return jnp.argsort(jnp.argsort(noise)) < count


def check_measure(measure: str) -> str:
  if measure not in MEASURES:
    raise ValueError(f"measure must be one of {tuple(MEASURES)}, got {measure!r}")
  return measure


def check_case(case: int) -> int:
  if isinstance(case, bool) or case not in CASES:
    rules = ", ".join(f"{c} ({rule})" for c, rule in CASE_RULES.items())
    raise ValueError(f"case must be one of {rules}, got {case!r}")
  return int(case)
