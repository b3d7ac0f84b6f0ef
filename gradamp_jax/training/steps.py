"""The run's state and its pure, jit-able functions: the training step, a chunk of steps,
the evaluation over a split, and the initial state.

The data stay on the device (:mod:`gradamp_jax.input_pipeline.device`): a chunk gathers and
augments each step's batch itself, so nothing crosses from the host while it runs.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from gradamp_jax import input_pipeline, models
from gradamp_jax.training import conv_choice


class TrainState(NamedTuple):
  """Everything a checkpoint holds; a pytree of arrays."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  bad_step: jax.Array  # first step with a non-finite loss or gradient, -1 if none


def cross_entropy(logits, labels):
  return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)


def make_train_step(graphdef, tx):
  """Returns ``train_step(state, batch) -> (state, metrics)`` (pure, jit-able)."""

  def train_step(state: TrainState, batch):
    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.batch_stats)
      logits = model(batch["image"], train=True)
      _, _, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
      loss = jnp.mean(cross_entropy(logits, batch["label"]))
      return loss, (logits, batch_stats.to_pure_dict())

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
    metrics = dict(
      loss=loss, accuracy=jnp.mean(jnp.argmax(logits, -1) == batch["label"]), grad_norm=grad_norm
    )
    return TrainState(state.step + 1, params, batch_stats, opt_state, bad_step), metrics

  return train_step


def make_eval_step(graphdef):
  """Returns ``eval_step(state, batch) -> sums`` of loss, correct and count (mask-weighted)."""

  def eval_step(state: TrainState, batch):
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    logits = model(batch["image"], train=False)
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return dict(
      loss=jnp.sum(cross_entropy(logits, batch["label"]) * mask),
      correct=jnp.sum(correct * mask),
      count=jnp.sum(mask),
    )

  return eval_step


STEP_METRICS = ("loss", "accuracy", "grad_norm")


def make_train_chunk(graphdef, tx, mean, std, batch_sharding=None, *, loop: bool = True):
  """Returns ``train_chunk(state, data, plan, start, stop, history) -> (state, history,
  loss)``, ``loss`` being that of the chunk's last step.

  Runs steps ``start, ..., stop - 1`` of an epoch in one call (a ``fori_loop`` with traced
  bounds: one compilation serves every chunk, phase and selection). Each step's batch is
  gathered from ``data`` (:class:`~gradamp_jax.input_pipeline.DeviceSplit`) by ``plan``
  and augmented on the device; ``history`` holds each :data:`STEP_METRICS` value per step
  of the epoch (arrays of length steps_per_epoch), filled in at indices ``start .. stop - 1``.
  With ``loop=False`` a call runs step ``start`` alone, without a loop (``stop`` must be
  ``start + 1``): XLA:CPU runs convolution gradients inside loops many times slower than
  outside them (jax-ml/jax#12868; see :func:`steps_per_call`).
  """
  train_step = make_train_step(graphdef, tx)

  def train_chunk(state, data, plan, start, stop, history):
    def body(i, carry):
      state, history = carry
      batch = input_pipeline.train_batch(data, plan, i, mean, std)
      if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      state, metrics = train_step(state, batch)
      return state, {k: v.at[i].set(metrics[k]) for k, v in history.items()}

    if loop:
      state, history = jax.lax.fori_loop(start, stop, body, (state, history))
    else:
      state, history = body(start, (state, history))
    return state, history, history["loss"][stop - 1]

  return train_chunk


def chunk_donation(loop: bool) -> tuple[int, ...]:
  """The arguments of ``train_chunk`` to donate: the history, updated in place, and the
  state when the chunk loops. A one-step chunk writes the state to fresh buffers: on a GPU,
  XLA would copy each transposed output (the convolution kernels', their momenta and
  accumulators) back into its donated buffer (BENCHMARKS.md, "GPU program").
  """
  return (0, 5) if loop else (5,)


def steps_per_call(config) -> int:
  """Training steps per jitted call: ``config.steps_per_dispatch``, or for 0 (automatic)
  1 on a CPU, where steps in a loop run many times slower (``make_train_chunk``;
  ``benchmarks/input_pipeline.py`` measures both), and 50 on other backends."""
  if config.steps_per_dispatch:
    return config.steps_per_dispatch
  return 1 if jax.default_backend() == "cpu" else 50


def make_evaluate(graphdef, mean, std, batch_sharding=None):
  """Returns ``evaluate(state, split) -> sums`` of loss, correct and count over every
  example of an :class:`~gradamp_jax.input_pipeline.EvalSplit`, in one call."""
  eval_step = make_eval_step(graphdef)

  def evaluate(state: TrainState, split):
    def body(totals, batch):
      images, labels, mask = batch
      image = input_pipeline.normalize_images(images, mean, std)
      batch = dict(image=image, label=labels, mask=mask)
      if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      return jax.tree.map(jnp.add, totals, eval_step(state, batch)), None

    zero = jnp.zeros([], jnp.float32)
    totals, _ = jax.lax.scan(body, dict(loss=zero, correct=zero, count=zero), tuple(split))
    return totals

  return evaluate


def create_train_state(config, num_classes: int, tx):
  """Builds the model and the initial :class:`TrainState`; returns (graphdef, state)."""
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  model = models.create(
    config.model, num_classes, seed=config.seed, dtype=dtype, conv=conv_choice.resolve(config).conv
  )
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params = params.to_pure_dict()
  state = TrainState(
    step=jnp.zeros([], jnp.int32),
    params=params,
    batch_stats=batch_stats.to_pure_dict(),
    opt_state=tx.init(params),
    bad_step=jnp.full([], -1, jnp.int32),
  )
  return graphdef, state
