"""Per-epoch selection measures of every layer (G, eq. 4; G′, eq. 7; any of
:data:`~gradamp_jax.measures.MEASURES`) as optax state.

One accumulation serves :func:`directionality_monitor` and the amplification transforms,
keeping only the sums the tracked measures need; the state is arrays only.
"""

from __future__ import annotations

import math
from typing import Sequence

import jax
import jax.numpy as jnp
import optax
from jax.tree_util import GetAttrKey

from gradamp_jax import layers as layers_lib
from gradamp_jax import measures as measures_lib
from gradamp_jax import phases as phases_lib


@jax.tree_util.register_pytree_with_keys_class
class DirectionalityState:
  """Accumulators of the epoch in progress and the measures of the last finished epoch.

  A pytree with children ``count``, ``epoch``, the values', the sums', ``layers_id``: for G
  and G′, ``count, epoch, G, G_prime, signed_sum, abs_sum, layers_id``.

  Attributes:
    count: updates seen.
    epoch: the 1-based epoch whose measures the state holds (0: none finished).
    values: measure name -> ``(L,)`` float32 values over that epoch (NaN: non-finite).
    sums: sum name -> accumulator, per weight (parameter-shaped) or per layer ``(L,)``.
    layers_id: CRC-32 of the layer names, to check reports against the parameters.
  """

  def __init__(self, count, epoch, values: dict, sums: dict, layers_id):
    self.count, self.epoch, self.layers_id = count, epoch, layers_id
    # Canonical order whatever jax.tree.map (which sorts keys) gives: one tree per set.
    rank = {k: i for i, k in enumerate(measures_lib.MEASURES)}
    self.values = {k: values[k] for k in sorted(values, key=lambda k: (rank.get(k, len(rank)), k))}
    self.sums = {k: sums[k] for k in measures_lib.SUMS if k in sums}

  @property
  def measures(self) -> tuple[str, ...]:
    return tuple(self.values)

  def replace(self, **changes) -> DirectionalityState:
    fields = {k: getattr(self, k) for k in ("count", "epoch", "values", "sums", "layers_id")}
    return DirectionalityState(**{**fields, **changes})

  def tree_flatten_with_keys(self):
    children = [(GetAttrKey("count"), self.count), (GetAttrKey("epoch"), self.epoch)]
    children += [(GetAttrKey(k), v) for k, v in self.values.items()]
    children += [(GetAttrKey(k), v) for k, v in self.sums.items()]
    children.append((GetAttrKey("layers_id"), self.layers_id))
    return children, (tuple(self.values), tuple(self.sums))

  @classmethod
  def tree_unflatten(cls, aux, children):
    names, sums = aux
    count, epoch, *rest, layers_id = children
    return cls(count, epoch, dict(zip(names, rest)), dict(zip(sums, rest[len(names) :])), layers_id)

  def __repr__(self):
    return (
      f"DirectionalityState(count={self.count!r}, epoch={self.epoch!r}, "
      f"measures={self.measures}, sums={tuple(self.sums)})"
    )


def init_state(params, index: layers_lib.LayerIndex, tracked: Sequence[str]) -> DirectionalityState:
  """Zero accumulators (float32) for the measures ``tracked``."""
  tracked = measures_lib.tracked_set(tracked)
  names, per_weight = measures_lib.needed_sums(tracked)
  per_layer = lambda: jnp.zeros((index.num_layers,), jnp.float32)
  per_param = lambda: jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
  return DirectionalityState(
    count=jnp.zeros([], jnp.int32),
    epoch=jnp.zeros([], jnp.int32),
    values={m: per_layer() for m in tracked},
    sums={name: (per_param if per_weight else per_layer)() for name in names},
    layers_id=jnp.asarray(layers_lib.names_id(index.names), jnp.uint32),
  )


def _per_weight(state: DirectionalityState) -> bool:
  return not isinstance(next(iter(state.sums.values())), jax.Array)


def _added(state: DirectionalityState, leaves, index) -> dict:
  """Each sum plus this update's contribution (:data:`~gradamp_jax.measures.SUMS`)."""
  out = {}
  for name, acc in state.sums.items():
    terms = [measures_lib.SUMS[name](g.astype(jnp.float32)) for g in leaves]
    if _per_weight(state):
      out[name] = jax.tree.map(jnp.add, acc, jax.tree.unflatten(jax.tree.structure(acc), terms))
    else:
      out[name] = acc + measures_lib.layer_sum(terms, index.leaf_layer, index.num_layers)
  return out


def measure_window(state: DirectionalityState, index, steps: int) -> dict:
  """The tracked measures' per-layer values from the sums of a window of ``steps``."""
  per_weight = _per_weight(state)
  sums = {k: jax.tree.leaves(v) if per_weight else v for k, v in state.sums.items()}
  window = measures_lib.Window(sums, per_weight, steps, index.leaf_layer, index.num_layers)
  return {m: measures_lib.MEASURES[m].value(window).astype(jnp.float32) for m in state.values}


def update_state(
  state: DirectionalityState, leaves, index, *, steps_per_epoch: int, gate=True
) -> DirectionalityState:
  """Adds one update's raw gradient ``leaves``; an epoch's last update computes its measures,
  the next epoch's first resets the sums. ``gate`` (traced, per epoch): measure this epoch."""
  gate = jnp.asarray(gate, bool)
  starts = state.count % steps_per_epoch == 0
  # Element-wise selects, not a conditional: XLA fuses them and updates in place.
  kept = jax.tree.map(lambda acc: jnp.where(starts, jnp.zeros_like(acc), acc), state.sums)
  added = _added(state.replace(sums=kept), leaves, index)
  state = state.replace(
    sums=jax.tree.map(lambda new, acc: jnp.where(gate, new, acc), added, state.sums)
  )
  finishes = gate & ((state.count + 1) % steps_per_epoch == 0)
  values = jax.lax.cond(
    finishes, lambda s: measure_window(s, index, steps_per_epoch), lambda s: s.values, state
  )
  epoch = jnp.where(finishes, state.count // steps_per_epoch + 1, state.epoch)
  return state.replace(epoch=epoch, values=values, count=state.count + 1)


def directionality_monitor(
  steps_per_epoch: int, measures: Sequence[str] = measures_lib.DEFAULT_TRACKED
) -> optax.GradientTransformation:
  """Measures G (eq. 4) and G′ (eq. 7) — or any defined measures — of every layer over
  every epoch; the gradients pass through unchanged.

  Read with :func:`directionality_report`; chain it first to measure the raw gradients. A
  layer with a non-finite gradient during an epoch reports NaN for that epoch.

  Args:
    steps_per_epoch, measures: updates per epoch, and the measures to track.

  Returns:
    An ``optax.GradientTransformation`` whose state is a :class:`DirectionalityState`.

  Example:
    >>> import optax, gradamp_jax as ga
    >>> tx = optax.chain(ga.directionality_monitor(steps_per_epoch=390), optax.sgd(0.1))
  """
  steps_per_epoch = phases_lib.check_steps_per_epoch(steps_per_epoch)
  tracked = measures_lib.tracked_set(measures)

  def init_fn(params):
    return init_state(params, layers_lib.layer_index(params), tracked)

  def update_fn(updates, state, params=None):
    del params
    index = layers_lib.layer_index(updates)
    layers_lib.check_layer_count(index, len(next(iter(state.values.values()))))
    leaves = jax.tree.leaves(updates)
    return updates, update_state(state, leaves, index, steps_per_epoch=steps_per_epoch)

  return optax.GradientTransformation(init_fn, update_fn)


def directionality_report(opt_state, params) -> list[dict]:
  """The tracked measures of every layer for the last finished epoch, one row per layer.

  Args:
    opt_state: an optimizer state containing a :class:`DirectionalityState`; of several, the
      one with the latest finished epoch (the first on ties).
    params: the parameters (give the layer names, docs/method.md §2).

  Returns:
    Rows with ``layer``, ``index``, ``epoch`` (the last finished) and one column per tracked
    measure, e.g. ``G`` (eq. 4) and ``G_prime`` (eq. 7). Empty before the first epoch ends.

  Raises:
    ValueError: when the optimizer state holds none, or was built for other layers.

  Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame(ga.directionality_report(opt_state, params))  # doctest: +SKIP
  """
  found = layers_lib.find_instances(opt_state, DirectionalityState)
  if not found:
    raise ValueError(
      "the optimizer state holds no DirectionalityState; chain "
      "directionality_monitor(steps_per_epoch) into the optimizer"
    )
  state = jax.device_get(max(found, key=lambda s: int(s.epoch)))
  num_layers = len(next(iter(state.values.values())))
  names = layers_lib.check_names(params, int(state.layers_id), num_layers)
  epoch = int(state.epoch)
  if epoch == 0:
    return []
  return [
    dict(layer=name, index=i, epoch=epoch, **{m: float(v[i]) for m, v in state.values.items()})
    for i, name in enumerate(names)
  ]


def finite_or_none(x):
  """For JSON output: NaN and infinities become ``None``."""
  return x if not isinstance(x, float) or math.isfinite(x) else None
