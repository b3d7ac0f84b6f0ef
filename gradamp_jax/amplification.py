"""Gradient amplification as optax transforms (Basodi et al. 2023; Basodi et al. 2020).

Chain one before an optimizer (the paper's placement), or wrap one with :func:`amplify` (README.md
shows both). The whole schedule runs inside ``jit`` from arrays in the optimizer state: no
recompilation at phase changes, and a restored checkpoint resumes mid-phase (docs/method.md).
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gradamp_jax import actions as actions_lib
from gradamp_jax import directionality as directionality_lib
from gradamp_jax import layers as layers_lib
from gradamp_jax import measures
from gradamp_jax import phases as phases_lib

CONTROLS = (None, "matched_random")
# ``amplification.method`` (docs/training.md).
METHODS = ("none", "intelligent", "random", "matched_random", "all")
MEASURED_METHODS = ("intelligent", "matched_random")
PLACEMENTS = ("gradients", "updates")


class AmplificationState(NamedTuple):
  """Optimizer state of the amplification transforms: arrays only.

  Attributes:
    count: number of updates seen.
    eligible: bool per layer, fixed at init.
    mask: 1.0 for the layers of the latest selection, else 0.0.
    scale: each layer's factor from the action while the latest selection is active.
    measure_mask: the threshold rule's own choice (differs from ``mask`` for matched random).
    selection_phase: the phase the latest selection applies in (-1: none).
    selection_step: update count at which the latest selection took effect (-1: none).
    selection_epoch: 1-based epoch analysed for it (random: the last before it, 0 if none).
    selection_factor: the factor the selected layers receive.
    num_selections: number of selections so far.
    active: whether the last update applied the mask.
    measure: the measure per layer at the latest selection (zeros for random selection).
    normalized: its z-score Ĝ per layer.
    directionality: the analysis windows' :class:`~gradamp_jax.DirectionalityState` (empty
      for random selection).
    key: PRNG key for random selections.
    layers_id: CRC-32 of the layer names, to check reports against the parameters.
  """

  count: jax.Array
  eligible: jax.Array
  mask: jax.Array
  scale: jax.Array
  measure_mask: jax.Array
  selection_phase: jax.Array
  selection_step: jax.Array
  selection_epoch: jax.Array
  selection_factor: jax.Array
  num_selections: jax.Array
  active: jax.Array
  measure: jax.Array
  normalized: jax.Array
  directionality: Any
  key: jax.Array
  layers_id: jax.Array


class _Tables(NamedTuple):
  """Per-epoch schedule, indexed by 0-based epoch; the last entry stands for 'after'."""

  phase: np.ndarray  # phase index, -1 past the end
  factor: np.ndarray  # factor of amplified phases, 1 elsewhere
  window: np.ndarray  # gradients of this epoch are analysed
  select_at_start: np.ndarray  # a new selection takes effect at this epoch's first step


def _schedule_tables(phases, reselect_every: Optional[int], wait_first_epoch: bool) -> _Tables:
  phases = phases_lib.parse_phases(phases)
  if reselect_every is not None and not phases_lib.is_positive_integer(reselect_every):
    raise ValueError(
      f"reselect_every must be None (once per amplified phase) or a positive number "
      f"of epochs, got {reselect_every!r}"
    )
  total = phases_lib.num_epochs(phases)
  phase = np.full(total + 1, -1, np.int32)
  factor = np.ones(total + 1, np.float32)
  window = np.zeros(total + 1, bool)
  select_at_start = np.zeros(total + 1, bool)
  start = 0  # 0-based first epoch of the phase
  for p, ph in enumerate(phases):
    end = ph.end_epoch  # 0-based exclusive end
    phase[start:end] = p
    if ph.is_amp:
      factor[start:end] = ph.factor
      period = int(reselect_every or (end - start))  # None: once per phase
      points = np.arange(start + 1 if wait_first_epoch else start, end, period)
      select_at_start[points] = True
      window[points[points > start] - 1] = True  # each point's previous epoch, in the phase
    start = end
  return _Tables(phase, factor, window, select_at_start)


def selection_epochs(
  phases: Sequence[phases_lib.PhaseLike], reselect_every: Optional[int] = None
) -> list[int]:
  """The 1-based epochs whose statistics a selection analyses, in order.

  A selection analysing epoch ``e`` takes effect at the first step of epoch ``e + 1``
  (docs/method.md §5; random selection has the same timing).

  Example:
    >>> selection_epochs([(50, 0.1, 0, 1), (100, 0.1, 1, 2), (130, 0.01, 1, 2), (150, 0.01, 0, 1)])
    [51, 101]
  """
  tables = _schedule_tables(phases, reselect_every, wait_first_epoch=True)
  return [int(e) for e in np.flatnonzero(tables.select_at_start)]


class _Rule(NamedTuple):
  """``choose(state, key)`` -> (mask, the measure's own mask, values, normalized values)."""

  choose: Callable[[AmplificationState, jax.Array], tuple]
  measure: Optional[str]
  wait_first_epoch: bool


def _measure_rule(measure: str, case: int, threshold, control: Optional[str]) -> _Rule:
  measures.check_measure(measure)
  case = measures.check_case(case)
  if not (phases_lib.is_traced(threshold) or phases_lib.is_finite_real(threshold)):
    raise ValueError(f"threshold must be a finite number, got {threshold!r}")
  if control not in CONTROLS:
    raise ValueError(f"control must be one of {CONTROLS}, got {control!r}")
  threshold = threshold if phases_lib.is_traced(threshold) else float(threshold)

  def choose(state, key):
    values = state.directionality.values[measure]  # the analysed epoch's
    normalized = measures.normalize(values, state.eligible)
    chosen = measures.select_layers(normalized, state.eligible, case=case, threshold=threshold)
    drawn = measures.random_subset(key, state.eligible, jnp.sum(chosen)) if control else chosen
    return drawn, chosen, values, normalized

  return _Rule(choose, measure, wait_first_epoch=True)


def _random_rule(ratio: float, wait_first_epoch: bool) -> _Rule:
  if not phases_lib.is_finite_real(ratio) or not 0.0 <= float(ratio) <= 1.0:
    raise ValueError(f"ratio must be a number in [0, 1], got {ratio!r}")
  ratio = float(ratio)

  def choose(state, key):
    # round(ratio × n) for every possible number n of eligible layers, halves up.
    counts = [int(math.floor(ratio * n + 0.5)) for n in range(state.eligible.shape[0] + 1)]
    count = jnp.asarray(counts, jnp.int32)[jnp.sum(state.eligible)]
    chosen = measures.random_subset(key, state.eligible, count)
    zeros = jnp.zeros(state.eligible.shape, jnp.float32)
    return chosen, zeros, zeros, zeros

  return _Rule(choose, None, wait_first_epoch)


def _tracked(track_directionality, measure: Optional[str]) -> tuple[str, ...]:
  """Measures kept in the state: those tracked every epoch plus the rule's own."""
  if isinstance(track_directionality, str):
    raise ValueError(
      "track_directionality must be a bool or a sequence of measure names, "
      f"got {track_directionality!r}"
    )
  every = measures.DEFAULT_TRACKED if track_directionality is True else track_directionality
  names = list(every or ())
  names += [measure] if measure is not None and measure not in names else []
  return measures.tracked_set(names) if names else ()


def _amplification(
  rule, phases, steps_per_epoch, reselect_every, seed, eligible, track_directionality, action
) -> optax.GradientTransformation:
  name, action_params = action
  if rule.measure is None and actions_lib.check_action(name).uses_measure:
    raise ValueError(
      f"action {name!r} reads the normalized measure, which a random selection has not; "
      "select by a measure (intelligent_amplification)"
    )
  action = name, actions_lib.check_params(name, action_params)
  tracked = _tracked(track_directionality, rule.measure)
  tables = _schedule_tables(phases, reselect_every, rule.wait_first_epoch)
  steps_per_epoch = phases_lib.check_steps_per_epoch(steps_per_epoch)

  def init_fn(params):
    return _init_state(params, tracked=tracked, eligible=eligible, seed=seed)

  def update_fn(updates, state, params=None):
    del params
    index = layers_lib.layer_index(updates)  # eligibility is in the state
    layers_lib.check_layer_count(index, state.mask.shape[0])
    leaves = jax.tree.leaves(updates)
    epoch = jnp.minimum(state.count // steps_per_epoch, len(tables.phase) - 1)  # 0-based
    phase = jnp.asarray(tables.phase)[epoch]
    do_select = (state.count % steps_per_epoch == 0) & jnp.asarray(tables.select_at_start)[epoch]
    # Element-wise selects, not a conditional (which would copy each output on a GPU).
    chosen = _select(state, rule.choose, action, phase, epoch, jnp.asarray(tables.factor)[epoch])
    state = jax.tree.map(lambda new, old: jnp.where(do_select, new, old), chosen, state)
    # Amplify (eq. 2): the selected layers' gradients times the phase's factor.
    state = state._replace(active=(state.selection_phase >= 0) & (state.selection_phase == phase))
    scaled = _scaled(updates, index, applied_scale(state))

    # Measure the raw gradients of analysis windows (eqs. 4 and 7), or of every epoch.
    stats = state.directionality
    if tracked:
      gate = True if track_directionality else jnp.asarray(tables.window)[epoch]
      stats = directionality_lib.update_state(
        stats, leaves, index, steps_per_epoch=steps_per_epoch, gate=gate
      )
    return scaled, state._replace(count=state.count + 1, directionality=stats)

  return optax.GradientTransformation(init_fn, update_fn)


def _init_state(params, *, tracked, eligible, seed) -> AmplificationState:
  index = layers_lib.layer_index(params)
  elig = layers_lib.eligible_mask(index, eligible)
  zeros = lambda: jnp.zeros((index.num_layers,), jnp.float32)  # distinct buffers: donatable
  stats = directionality_lib.init_state(params, index, tracked) if tracked else ()
  return AmplificationState(
    count=jnp.zeros([], jnp.int32),
    eligible=jnp.asarray(elig, bool),
    mask=zeros(),
    scale=jnp.ones((index.num_layers,), jnp.float32),
    measure_mask=zeros(),
    selection_phase=jnp.full([], -1, jnp.int32),
    selection_step=jnp.full([], -1, jnp.int32),
    selection_epoch=jnp.zeros([], jnp.int32),
    selection_factor=jnp.ones([], jnp.float32),
    num_selections=jnp.zeros([], jnp.int32),
    active=jnp.zeros([], bool),
    measure=zeros(),
    normalized=zeros(),
    directionality=stats,
    key=jax.random.PRNGKey(seed),
    layers_id=jnp.asarray(layers_lib.names_id(index.names), jnp.uint32),
  )


def _select(state: AmplificationState, choose, action, phase, epoch, factor):
  """``state`` after a selection by ``choose`` at 0-based ``epoch``, scaled by ``action``."""
  key, subkey = jax.random.split(state.key)
  mask, measure_mask, values, normalized = choose(state, subkey)
  selection = actions_lib.Selection(mask.astype(bool), normalized, state.eligible, factor)
  return state._replace(
    mask=mask.astype(jnp.float32),
    scale=actions_lib.layer_scale(*action, selection),
    measure_mask=measure_mask.astype(jnp.float32),
    measure=values,
    normalized=normalized,
    selection_phase=phase,
    selection_step=state.count,
    selection_epoch=epoch,
    selection_factor=factor,
    num_selections=state.num_selections + 1,
    key=key,
  )


def applied_scale(state: AmplificationState) -> jax.Array:
  """Each layer's factor at the update that produced ``state`` (1 outside a selection)."""
  return jnp.where(state.active, state.scale, 1.0)


def _scaled(tree, index: layers_lib.LayerIndex, scale):
  """``tree`` with each layer's leaves times its ``scale``, in float32 (no rounded factor)."""
  leaves, treedef = jax.tree.flatten(tree)
  each = zip(leaves, index.leaf_layer)
  wide = lambda x: jnp.promote_types(x.dtype, jnp.float32)
  return treedef.unflatten([(x * scale[i].astype(wide(x))).astype(x.dtype) for x, i in each])


class AmplifiedOptimizerState(NamedTuple):
  """State of :func:`amplify`: the amplification transform's and the optimizer's."""

  amplification: AmplificationState
  optimizer: Any


def amplify(
  optimizer: optax.GradientTransformation,
  amplification: optax.GradientTransformation,
  *,
  where: str = "gradients",
) -> optax.GradientTransformation:
  """An optimizer whose selected layers are amplified before or after it.

  ``amplification`` always measures and selects from the raw gradients.

  * ``where="gradients"`` (eqs. 2–3): as ``optax.chain(amplification, optimizer)``. Under
    Adam the factor cancels after about ``1 / (1 - b2)`` steps, under LAMB and LARS at once
    (docs/method.md §9).
  * ``where="updates"``: the selected layers' updates are scaled — a per-layer
    learning-rate multiplier for every optimizer.

  Both placements share one state layout (:class:`AmplifiedOptimizerState`).

  Example:
    >>> import optax, gradamp_jax as ga
    >>> phases = [(1, 1e-3, 0, 1), (3, 1e-3, 1, 2)]
    >>> tx = ga.amplify(optax.adamw(ga.learning_rate_schedule(phases, 100)),
    ...                 ga.intelligent_amplification(phases, 100), where="updates")
  """
  if where not in PLACEMENTS:
    raise ValueError(f"where must be one of {PLACEMENTS}, got {where!r}")

  def init_fn(params):
    return AmplifiedOptimizerState(amplification.init(params), optimizer.init(params))

  def update_fn(grads, state, params=None, **extra_args):
    scaled, amp_state = amplification.update(grads, state.amplification, params)
    inputs = scaled if where == "gradients" else grads
    updates, opt_state = optimizer.update(inputs, state.optimizer, params, **extra_args)
    if where == "updates":
      updates = _scaled(updates, layers_lib.layer_index(updates), applied_scale(amp_state))
    return updates, AmplifiedOptimizerState(amp_state, opt_state)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def intelligent_amplification(
  phases: Sequence[phases_lib.PhaseLike],
  steps_per_epoch: int,
  *,
  measure: str = "G_prime",
  case: int = 1,
  threshold: float = 1.0,
  reselect_every: Optional[int] = None,
  control: Optional[str] = None,
  seed: int = 0,
  eligible: layers_lib.Eligible = None,
  track_directionality: bool = False,
  action: str = "amplify",
  action_params: Optional[dict] = None,
) -> optax.GradientTransformation:
  """Intelligent gradient amplification (Basodi et al. 2023, arXiv:2305.18445, §3, Algorithm 1).

  The first epoch of each amplified phase is an analysis window (nothing amplified). At its
  end each layer's measure is z-scored across the eligible layers (eqs. 6, 8); the layers past
  the threshold get the phase's factor (eq. 2) until the phase ends. A layer with a non-finite
  gradient in the window gets a NaN measure and is not selected.

  Args:
    phases, steps_per_epoch: the training strategy (:func:`~gradamp_jax.parse_phases`) and
      optimizer updates per epoch.
    measure: a name of :data:`~gradamp_jax.measures.MEASURES`: ``"G"`` (eq. 4),
      ``"G_prime"`` (eq. 7), ``"GSNR"``, or a registered one.
    case: 1 (``Ĝ > threshold``), 2 (``|Ĝ| > threshold``) or 3 (``Ĝ < −threshold``).
    threshold: on Ĝ; finite, or a traced scalar (one per member of a ``vmap``-ped cohort).
    reselect_every: select anew every k epochs; ``None`` selects once per phase.
    control: ``None``, or ``"matched_random"``: as many layers as the measure selected,
      drawn at random (with the state's key, from ``seed``).
    seed: seed of the PRNG key kept in the state.
    eligible: ``None``/``"all"``, ``"kernels"`` or a predicate on layer names
      (:func:`~gradamp_jax.layers.eligible_mask`).
    track_directionality: also measure every epoch: ``True`` tracks G and G′, a sequence of
      names those; ``measure`` always among them.
    action: a name of :data:`~gradamp_jax.actions.ACTIONS`: ``"amplify"`` (eq. 2),
      ``"freeze"`` (use ``amplify(..., where="updates")``) or ``"scale_by_zscore"``.
    action_params: the action's parameters (e.g. ``dict(alpha=0.5)``), defaults for others.

  Returns:
    An ``optax.GradientTransformation`` whose state is an :class:`AmplificationState`.

  Raises:
    ValueError: for a bad argument; at ``init``, if ``eligible`` leaves no layer.
  """
  rule = _measure_rule(measure, case, threshold, control)
  shared = (phases, steps_per_epoch, reselect_every, seed, eligible, track_directionality)
  return _amplification(rule, *shared, (action, action_params))


def random_amplification(
  phases: Sequence[phases_lib.PhaseLike],
  steps_per_epoch: int,
  *,
  ratio: float,
  seed: int = 0,
  reselect_every: Optional[int] = None,
  eligible: layers_lib.Eligible = None,
  wait_first_epoch: bool = True,
  track_directionality: bool = False,
  action: str = "amplify",
  action_params: Optional[dict] = None,
) -> optax.GradientTransformation:
  """Random layer amplification (Basodi et al. 2020 [16]; docs/method.md §6).

  At each selection point of an amplified phase, ``round(ratio × L)`` of the ``L`` eligible
  layers (halves round up) are drawn uniformly without replacement and amplified until the
  next selection point.

  Args:
    ratio: fraction of eligible layers to amplify, in [0, 1].
    wait_first_epoch: keep the phase's first epoch un-amplified, the intelligent selector's
      timing (the default); ``False`` draws at the phase's first step.
    phases, steps_per_epoch, seed, reselect_every, eligible, track_directionality, action,
      action_params: as in :func:`intelligent_amplification` (one state layout), but not an
      action that reads the measure (``scale_by_zscore``).

  Returns:
    An ``optax.GradientTransformation`` whose state is an :class:`AmplificationState`.

  Example:
    >>> import gradamp_jax as ga
    >>> tx = ga.random_amplification([(1, 0.1, 0, 1), (3, 0.1, 1, 2)], 100, ratio=0.3)
  """
  rule = _random_rule(ratio, wait_first_epoch)
  shared = (phases, steps_per_epoch, reselect_every, seed, eligible, track_directionality)
  return _amplification(rule, *shared, (action, action_params))


def find_state(opt_state) -> AmplificationState:
  """The (single) :class:`AmplificationState` inside an optimizer state, e.g. a chain's."""
  found = layers_lib.find_instances(opt_state, AmplificationState)
  if len(found) != 1:
    raise ValueError(
      f"expected exactly one AmplificationState in the optimizer state, found {len(found)}"
    )
  return found[0]


def check_epoch_start(opt_state, epoch: int, steps_per_epoch: int) -> None:
  """Checks that a loop's epoch ``epoch`` (1-based) starts where the transforms count it,
  catching e.g. a ragged last batch before it shifts selections. Not jit-able.

  Raises:
    ValueError: the update count is not ``(epoch - 1) * steps_per_epoch``.
  """
  classes = (AmplificationState, directionality_lib.DirectionalityState)
  counters = [x.count for x in layers_lib.find_instances(opt_state, classes)]
  if not counters:
    raise ValueError(
      "the optimizer state holds no amplification transform or directionality monitor"
    )
  count, expected = int(counters[0]), (int(epoch) - 1) * int(steps_per_epoch)
  if count != expected:
    raise ValueError(
      f"epoch {epoch} starts after {count} updates, but with steps_per_epoch={steps_per_epoch} "
      f"the transforms expect {expected}: the loop makes {count / max(int(epoch) - 1, 1):g} "
      "updates per epoch; drop the ragged last batch (ga.steps_per_epoch) or pass the number "
      "of updates it really makes"
    )


def _reported_layers(state: AmplificationState, params, mask) -> tuple[str, ...]:
  """The state's layer names, checked against ``params`` as ``optax.masked`` hands them."""
  kept = params
  if mask is not None:
    tree = mask(params) if callable(mask) else mask
    kept = jax.tree.map(lambda keep, p: p if keep else None, tree, params)
  try:
    return layers_lib.check_names(kept, int(state.layers_id), len(state.mask))
  except ValueError as error:
    if mask is None and len(layers_lib.layer_names(params)) > len(state.mask):
      raise ValueError(
        f"{error}: for a transform inside optax.masked(transform, mask), pass that mask "
        "(selection_report(opt_state, params, mask=mask))"
      ) from None
    raise


def selection_report(opt_state, params, mask=None) -> list[dict]:
  """The latest layer selection, one row per layer of ``params``, for ``pandas.DataFrame``.

  Args:
    opt_state: an optimizer state containing one :class:`AmplificationState`.
    params: the parameters (gives the layer names, docs/method.md §2).
    mask: for a transform inside ``optax.masked(transform, mask)``, that mask.

  Returns:
    Rows with ``layer``, ``eligible``, ``value`` (G, eq. 4; G′, eq. 7; ...), ``normalized``
    (Ĝ, eqs. 6, 8), ``selected``, ``scale``, ``selected_by_measure``, ``factor``, ``step``,
    ``epoch`` (analysed) and ``masked_out`` (scale 1, NaN value); empty before a selection.

  Raises:
    ValueError: when ``params`` (masked by ``mask``) are not the ones the state was built for.
  """
  state = jax.device_get(find_state(opt_state))
  if int(state.num_selections) == 0:
    return []
  at = {name: i for i, name in enumerate(_reported_layers(state, params, mask))}
  return [_report_row(state, name, at.get(name)) for name in layers_lib.layer_names(params)]


def _report_row(state: AmplificationState, name: str, i: Optional[int]) -> dict:
  out = i is None  # masked out
  return dict(
    layer=name,
    eligible=not out and bool(state.eligible[i]),
    value=math.nan if out else float(state.measure[i]),
    normalized=math.nan if out else float(state.normalized[i]),
    selected=not out and bool(state.mask[i] > 0),
    scale=1.0 if out else float(state.scale[i]),
    selected_by_measure=not out and bool(state.measure_mask[i] > 0),
    factor=float(state.selection_factor),
    step=int(state.selection_step),
    epoch=int(state.selection_epoch),
    masked_out=out,
  )
