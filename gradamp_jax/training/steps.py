"""The run's state and its pure, jit-able functions: step, chunk of steps, evaluation, init.

The data stay on the device (:mod:`gradamp_jax.input_pipeline.device`): a chunk gathers and
augments each step's batch itself, so nothing crosses from the host while it runs.
"""

from __future__ import annotations

import functools
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


def make_loss(graphdef):
  """Returns ``loss(params, batch_stats, batch) -> (loss, (logits, batch_stats))``: the mean
  cross-entropy of a training batch and what the step keeps of the forward pass."""

  def loss(params, batch_stats, batch):
    model = nnx.merge(graphdef, params, batch_stats)
    logits = model(batch["image"], train=True)
    _, _, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
    return jnp.mean(cross_entropy(logits, batch["label"])), (logits, batch_stats.to_pure_dict())

  return loss


def members_value_and_grad(fn, in_axes, params, *args, summed: bool):
  """Each member's ``jax.value_and_grad(fn, has_aux=True)(params, *args)``: ``params``
  stacked along axis 0, ``args`` along ``in_axes`` (0 or None per leaf).

  With ``summed``, the gradient of the members' summed value through ``vmap(fn)``; without,
  ``vmap`` of each member's gradient. The numbers are the same (the members are
  independent); the programs are not. ``vmap`` turns a model's convolutions into grouped
  ones, one group per member. The gradient of a grouped convolution is a grouped
  backward-filter convolution reading the activations as they are; ``vmap`` of each
  member's gradient instead regroups every activation and output gradient along the batch
  axis, on a GPU a transposed copy of each: a sixth of a cohort's memory traffic
  (BENCHMARKS.md, "Cohorts"). But XLA:CPU computes a grouped backward-filter convolution as
  one ungrouped convolution masked by zeros, so a member's NaN reaches the others' kernel
  gradients (0 · NaN): ``summed`` is for GPUs, where each group is a kernel's own.
  """
  if not summed:
    return jax.vmap(jax.value_and_grad(fn, has_aux=True), in_axes=(0, *in_axes))(params, *args)
  # A barrier between the convolution kernels (rank 4 per member) and the model: without it
  # XLA fuses each kernel's regrouping for the input gradient into the kernel's update,
  # which then cannot write in place, and the loop copies every kernel each step.
  params = jax.tree.map(lambda x: jax.lax.optimization_barrier(x) if x.ndim == 5 else x, params)

  def summed_value(params):
    values, aux = jax.vmap(fn, in_axes=(0, *in_axes))(params, *args)
    return jnp.sum(values), (values, aux)

  (_, (values, aux)), grads = jax.value_and_grad(summed_value, has_aux=True)(params)
  return (values, aux), grads


def make_loss_and_grad(graphdef):
  """Returns ``loss_and_grad(params, batch_stats, batch) -> ((loss, (logits, batch_stats)),
  grads)``: one batch's training loss and its gradient.

  Under ``vmap`` (a cohort: the members' parameters, statistics and batches stacked) it is
  :func:`members_value_and_grad`, summed on GPUs and other accelerators, each member's own
  on a CPU (chosen when the program is lowered for its platform).
  """

  loss_fn = make_loss(graphdef)

  @jax.custom_batching.custom_vmap
  def loss_and_grad(params, batch_stats, batch):
    return jax.value_and_grad(loss_fn, has_aux=True)(params, batch_stats, batch)

  @loss_and_grad.def_vmap
  def members_loss_and_grad(size, batched, params, batch_stats, batch):
    params = jax.tree.map(
      lambda x, b: x if b else jnp.broadcast_to(x, (size, *jnp.shape(x))), params, batched[0]
    )
    in_axes = jax.tree.map(lambda b: 0 if b else None, batched[1:])
    each = lambda summed: functools.partial(members_value_and_grad, loss_fn, in_axes, summed=summed)
    out = jax.lax.platform_dependent(
      params, batch_stats, batch, cpu=each(False), default=each(True)
    )
    return out, jax.tree.map(lambda _: True, out)

  return loss_and_grad


def make_train_step(graphdef, tx):
  """Returns ``train_step(state, batch) -> (state, metrics)`` (pure, jit-able)."""
  loss_and_grad = make_loss_and_grad(graphdef)

  def train_step(state: TrainState, batch):
    (loss, (logits, batch_stats)), grads = loss_and_grad(state.params, state.batch_stats, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
    accuracy = jnp.mean(jnp.argmax(logits, -1) == batch["label"])
    metrics = dict(loss=loss, accuracy=accuracy, grad_norm=grad_norm)
    return TrainState(state.step + 1, params, batch_stats, opt_state, bad_step), metrics

  return train_step


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
  outside them (jax-ml/jax#12868; see :func:`steps_per_dispatch`).
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


def steps_per_dispatch(config) -> int:
  """Training steps per jitted call: ``config.steps_per_dispatch``, or for 0 (automatic)
  1 on a CPU, where steps in a loop run many times slower (``make_train_chunk``;
  ``benchmarks/input_pipeline.py`` measures both), and 50 on other backends."""
  if config.steps_per_dispatch:
    return config.steps_per_dispatch
  return 1 if jax.default_backend() == "cpu" else 50


def make_evaluate(graphdef, mean, std, batch_sharding=None):
  """Returns ``evaluate(state, split) -> sums`` of loss, correct and count over every
  example of an :class:`~gradamp_jax.input_pipeline.EvalSplit`, in one call (mask-weighted)."""

  def evaluate(state: TrainState, split):
    def body(totals, batch):
      images, labels, mask = batch
      image = input_pipeline.normalize_images(images, mean, std)
      batch = dict(image=image, label=labels, mask=mask)
      if batch_sharding is not None:
        batch = jax.lax.with_sharding_constraint(batch, batch_sharding)
      logits = nnx.merge(graphdef, state.params, state.batch_stats)(batch["image"], train=False)
      mask = batch["mask"]
      correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
      loss = cross_entropy(logits, batch["label"])
      sums = dict(loss=jnp.sum(loss * mask), correct=jnp.sum(correct * mask), count=jnp.sum(mask))
      return jax.tree.map(jnp.add, totals, sums), None

    zero = jnp.zeros([], jnp.float32)
    totals, _ = jax.lax.scan(body, dict(loss=zero, correct=zero, count=zero), tuple(split))
    return totals

  return evaluate


def create_train_state(config, num_classes: int, tx):
  """Builds the model and the initial :class:`TrainState`; returns (graphdef, state)."""
  dtype = jnp.bfloat16 if config.half_precision else jnp.float32
  conv = conv_choice.resolve(config).conv
  model = models.create(
    config.model, num_classes, seed=config.seed, dtype=dtype, conv=conv, width=config.width
  )
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params, batch_stats = params.to_pure_dict(), batch_stats.to_pure_dict()
  step, bad_step = jnp.zeros([], jnp.int32), jnp.full([], -1, jnp.int32)
  return graphdef, TrainState(step, params, batch_stats, tx.init(params), bad_step)
