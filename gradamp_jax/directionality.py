"""Per-epoch gradient directionality of every layer (eqs. 4 and 7) as optax state.

One implementation of the accumulation serves both :func:`directionality_monitor` (every
epoch, nothing amplified) and the amplification transforms (their analysis windows, or
every epoch when they also track). The state is arrays only, so it runs inside ``jit``
without recompiling and is checkpointed with the rest of the optimizer state.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from gradamp_jax import layers as layers_lib
from gradamp_jax import measures
from gradamp_jax import phases as phases_lib


class DirectionalityState(NamedTuple):
  """Accumulators of the epoch in progress and the measures of the last finished one.

  Attributes:
    count: updates seen.
    epoch: 1-based epoch whose measures ``G`` and ``G_prime`` hold (0: none finished).
    G: per layer, G of that epoch (eq. 4); NaN for a layer that saw a non-finite
      gradient in it.
    G_prime: per layer, G′ of that epoch (eq. 7), NaN where not computed (per-layer
      accumulation) or where a non-finite gradient was seen.
    signed_sum: ``Σ_j g`` of the epoch in progress: per weight (float32,
      parameter-shaped) or, when only G is needed, per layer ``(L,)``.
    abs_sum: ``Σ_j |g|``, shaped like ``signed_sum``.
    layers_id: CRC-32 of the layer names, to check reports against the parameters.
  """

  count: jax.Array
  epoch: jax.Array
  G: jax.Array
  G_prime: jax.Array
  signed_sum: Any
  abs_sum: Any
  layers_id: jax.Array


def init_state(params, index: layers_lib.LayerIndex, *, per_weight: bool) -> DirectionalityState:
  """Zero accumulators; per-weight ones (for G′) are float32 whatever the parameter dtype."""
  num_layers = index.num_layers
  if per_weight:
    zeros = lambda: jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), jnp.float32), params)
  else:
    zeros = lambda: jnp.zeros((num_layers,), jnp.float32)
  return DirectionalityState(
    count=jnp.zeros([], jnp.int32),
    epoch=jnp.zeros([], jnp.int32),
    G=jnp.zeros((num_layers,), jnp.float32),
    G_prime=jnp.full((num_layers,), jnp.nan, jnp.float32),
    signed_sum=zeros(),
    abs_sum=zeros(),
    layers_id=jnp.asarray(layers_lib.names_id(index.names), jnp.uint32),
  )


def _layer_totals(leaves, index, fn):
  totals = jnp.zeros((index.num_layers,), jnp.float32)
  for leaf, layer in zip(leaves, index.leaf_layer):
    totals = totals.at[layer].add(jnp.sum(fn(leaf.astype(jnp.float32))))
  return totals


def update_state(
  state: DirectionalityState,
  leaves,
  index: layers_lib.LayerIndex,
  *,
  steps_per_epoch: int,
  gate=True,
) -> DirectionalityState:
  """Adds one update's raw gradients; the update that completes an epoch computes its
  measures and resets the accumulators.

  Args:
    state: the current state.
    leaves: the gradient leaves, in ``index``'s order.
    index: the layer grouping.
    steps_per_epoch: updates per epoch.
    gate: a (traced) bool: whether this update's epoch is measured. It must be the
      same for all updates of an epoch; ungated epochs cost a predicate only.

  Returns:
    The new state (``count`` + 1).
  """
  per_weight = not isinstance(state.signed_sum, jax.Array)
  completes_epoch = (state.count + 1) % steps_per_epoch == 0

  def add(s):
    if per_weight:
      acc_def = jax.tree.structure(s.signed_sum)
      signed = [a + g.astype(jnp.float32) for a, g in zip(jax.tree.leaves(s.signed_sum), leaves)]
      absolute = [
        a + jnp.abs(g.astype(jnp.float32)) for a, g in zip(jax.tree.leaves(s.abs_sum), leaves)
      ]
      return s._replace(signed_sum=acc_def.unflatten(signed), abs_sum=acc_def.unflatten(absolute))
    return s._replace(
      signed_sum=s.signed_sum + _layer_totals(leaves, index, lambda g: g),
      abs_sum=s.abs_sum + _layer_totals(leaves, index, jnp.abs),
    )

  def finish(s):
    if per_weight:
      signed, absolute = jax.tree.leaves(s.signed_sum), jax.tree.leaves(s.abs_sum)
      g = measures.directionality_g(
        _layer_totals(signed, index, lambda x: x), _layer_totals(absolute, index, lambda x: x)
      )
      g_prime = measures.directionality_g_prime(
        signed, absolute, index.leaf_layer, index.num_layers
      )
    else:
      g = measures.directionality_g(s.signed_sum, s.abs_sum)
      g_prime = s.G_prime
    return s._replace(
      epoch=s.count // steps_per_epoch + 1,
      G=g,
      G_prime=g_prime,
      signed_sum=jax.tree.map(jnp.zeros_like, s.signed_sum),
      abs_sum=jax.tree.map(jnp.zeros_like, s.abs_sum),
    )

  gate = jnp.asarray(gate, bool)
  state = jax.lax.cond(gate, add, lambda s: s, state)
  state = jax.lax.cond(gate & completes_epoch, finish, lambda s: s, state)
  return state._replace(count=state.count + 1)


def directionality_monitor(steps_per_epoch: int) -> optax.GradientTransformation:
  """Measures G (eq. 4) and G′ (eq. 7) of every layer over every epoch; amplifies nothing.

  The gradients pass through unchanged. Each update adds its gradients to two float32
  parameter-sized accumulators (``Σ_j g`` and ``Σ_j |g|`` per weight, from which both
  measures follow); the update that completes epoch ``e`` computes epoch ``e``'s
  measures, keeps them in the state and resets the accumulators. Read them with
  :func:`directionality_report`. Chain it first to measure the raw gradients.

  A layer that receives a non-finite gradient during an epoch reports NaN for that
  epoch; the next epoch starts from clean accumulators.

  Args:
    steps_per_epoch: optimizer updates per epoch (>= 1).

  Returns:
    An ``optax.GradientTransformation`` whose state is a :class:`DirectionalityState`.

  Example:
    >>> import optax, gradamp_jax as ga
    >>> tx = optax.chain(ga.directionality_monitor(steps_per_epoch=390), optax.sgd(0.1))
  """
  steps_per_epoch = phases_lib.check_steps_per_epoch(steps_per_epoch)

  def init_fn(params):
    return init_state(params, layers_lib.layer_index(params), per_weight=True)

  def update_fn(updates, state, params=None):
    del params
    index = layers_lib.layer_index(updates)
    leaves = jax.tree.leaves(updates)
    layers_lib.check_leaves_match(index, leaves)
    return updates, update_state(state, leaves, index, steps_per_epoch=steps_per_epoch)

  return optax.GradientTransformation(init_fn, update_fn)


def find_directionality(opt_state) -> DirectionalityState:
  """The most recent :class:`DirectionalityState` in an optimizer state.

  A monitor's state, or the one inside an amplification transform's state; where
  there are several, the one with the latest finished epoch (the first on ties).
  """
  found = [
    x
    for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, DirectionalityState))
    if isinstance(x, DirectionalityState)
  ]
  if not found:
    raise ValueError(
      "the optimizer state holds no DirectionalityState; chain "
      "directionality_monitor(steps_per_epoch) into the optimizer"
    )
  return max(found, key=lambda s: int(s.epoch))


def directionality_report(opt_state, params) -> list[dict]:
  """G and G′ of every layer for the last finished epoch, one row per layer.

  Args:
    opt_state: an optimizer state containing a :class:`DirectionalityState` (from
      :func:`directionality_monitor`, or an amplification transform that tracks).
    params: the parameters (give the layer names, docs/method.md §2).

  Returns:
    Rows with ``layer``, ``index`` (position in network order), ``epoch`` (1-based,
    the last finished epoch), ``G`` (eq. 4) and ``G_prime`` (eq. 7; NaN where not
    measured). Empty before the first epoch completes.

  Raises:
    ValueError: when the optimizer state holds none, or was built for other layers.

  Example:
    >>> import pandas as pd
    >>> df = pd.DataFrame(ga.directionality_report(opt_state, params))  # doctest: +SKIP
  """
  state = jax.device_get(find_directionality(opt_state))
  names = layers_lib.check_names(params, int(state.layers_id), len(state.G))
  epoch = int(state.epoch)
  if epoch == 0:
    return []
  return [
    dict(layer=name, index=i, epoch=epoch, G=float(state.G[i]), G_prime=float(state.G_prime[i]))
    for i, name in enumerate(names)
  ]


def finite_or_none(x):
  """For JSON output: NaN and infinities become ``None``."""
  return x if not isinstance(x, float) or math.isfinite(x) else None
