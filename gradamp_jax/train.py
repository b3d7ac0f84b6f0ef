"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

A run writes into ``workdir``: ``config.json`` (the resolved config), ``run.json``
(devices, versions, layer grouping), ``metrics.jsonl`` (one row per epoch),
``layer_stats.jsonl`` (one row per layer at every selection), TensorBoard event files
under ``tensorboard/`` and orbax checkpoints under ``checkpoints/``. Running the same
command again resumes from the latest checkpoint.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import gradamp_jax as ga
from gradamp_jax import checkpointing
from gradamp_jax import config_fields
from gradamp_jax import input_pipeline
from gradamp_jax import layers as layers_lib
from gradamp_jax import models
from gradamp_jax import preemption
from gradamp_jax.directionality import finite_or_none
from gradamp_jax.jsonl import JsonlWriter, read_jsonl
from gradamp_jax.workdir_lock import WorkdirLock, WorkdirBusyError  # noqa: F401

METHODS, DATASETS = config_fields.METHODS, config_fields.DATASETS
MEASURED_METHODS = ("intelligent", "matched_random")  # select by G or G′


class TrainState(NamedTuple):
  """Everything a checkpoint holds; a pytree of arrays."""

  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  bad_step: jax.Array  # first step with a non-finite loss or gradient, -1 if none


class NonFiniteError(RuntimeError):
  """The loss or the gradients became NaN or infinite."""


# ----------------------------------------------------------------------------- config


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the config before any data is read or anything is compiled.

  Every field is checked against ``config_fields.RULES``; then what involves several
  fields or this machine.

  Raises:
    ValueError: naming the bad field and what is allowed.
  """
  config_fields.check_fields(config)
  if config.image_folder and not os.path.isdir(os.path.expanduser(config.image_folder)):
    raise ValueError(
        f"config.image_folder: folder {config.image_folder!r} does not exist; it must hold "
        "train/<class>/* and test/<class>/* images")
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise ValueError(f"config.{field}: must be a positive multiple of the device count "
                       f"({jax.device_count()}), got {config[field]!r}")
  try:  # the transforms check measure, case, threshold and ratio themselves
    create_amplification(config, steps_per_epoch=1)
  except ValueError as e:
    raise ValueError(f"config.amplification: {e}") from None


def check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_probe")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"workdir: {workdir!r} is not a writable directory ({e})") from e


# Fields that may change between a run and its resumption: where data lives and how the
# work is cut into calls, not what is computed.
RESUMABLE_CHANGES = ("data_dir", "image_folder", "download", "eval_batch_size",
                     "steps_per_dispatch", "keep_checkpoints")


def check_same_experiment(config, workdir: str) -> None:
  """Refuses to resume a workdir whose run used another config (but for data locations)."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    before = json.load(f)
  now = json.loads(config.to_json_best_effort())
  changed = sorted(k for k in set(before) | set(now)
                   if k not in RESUMABLE_CHANGES and before.get(k) != now.get(k))
  if changed:
    raise ValueError(
        f"workdir: {workdir!r} holds a run with a different config (fields: "
        f"{', '.join(changed)}); use a new workdir, or the same config to resume")


# ----------------------------------------------------------------------------- optimizer


def create_amplification(config, steps_per_epoch: int):
  """The amplification transform the config asks for.

  With ``track_directionality`` every method, ``none`` included (a random selection of
  no layer), gets a transform with one state layout that measures G and G′ every epoch:
  runs that differ only in their selection rule are then the same computation until
  their selections differ, and one can start from another's checkpoint
  (:mod:`gradamp_jax.fork`). Without it, ``none`` gets no transform (None).
  """
  amp = config.amplification
  track = bool(config.track_directionality)
  common = dict(reselect_every=amp.reselect_every or None, seed=config.seed,
                eligible=amp.eligible)
  if amp.method == "none" and not track:
    return None
  if amp.method in MEASURED_METHODS:  # tracking shares the selection's accumulators
    return ga.intelligent_amplification(
        config.phases, steps_per_epoch, measure=amp.measure, case=amp.case,
        threshold=amp.threshold, track_directionality=track,
        control="matched_random" if amp.method == "matched_random" else None, **common)
  ratio = {"none": 0.0, "all": 1.0}.get(amp.method, amp.ratio)
  return ga.random_amplification(config.phases, steps_per_epoch, ratio=ratio,
                                 track_directionality=track, **common)


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Amplification → weight decay → SGD with momentum.

  Weight decay is added after amplification, as PyTorch's ``SGD(weight_decay=...)`` adds
  it inside the optimizer step: only the loss gradient is amplified. With
  ``track_directionality`` the amplification transform measures the raw gradients' G and
  G′ every epoch, with the accumulators its selections use.
  """
  amplification = create_amplification(config, steps_per_epoch)
  parts = []
  if amplification is not None:
    parts.append(amplification)
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  learning_rate = ga.learning_rate_schedule(config.phases, steps_per_epoch)
  parts.append(optax.sgd(learning_rate, momentum=config.momentum or None))
  return optax.chain(*parts)


# ----------------------------------------------------------------------------- steps


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

    (loss, (logits, batch_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    bad_step = jnp.where((state.bad_step < 0) & ~finite, state.step, state.bad_step)
    metrics = dict(loss=loss, accuracy=jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
                   grad_norm=grad_norm)
    return TrainState(state.step + 1, params, batch_stats, opt_state, bad_step), metrics

  return train_step


def make_eval_step(graphdef):
  """Returns ``eval_step(state, batch) -> sums`` of loss, correct and count (mask-weighted)."""

  def eval_step(state: TrainState, batch):
    model = nnx.merge(graphdef, state.params, state.batch_stats)
    logits = model(batch["image"], train=False)
    mask = batch["mask"]
    correct = (jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32)
    return dict(loss=jnp.sum(cross_entropy(logits, batch["label"]) * mask),
                correct=jnp.sum(correct * mask), count=jnp.sum(mask))

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
      batch = dict(image=input_pipeline.normalize(images, mean, std), label=labels, mask=mask)
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
  model = models.create(config.model, num_classes, seed=config.seed, dtype=dtype,
                        conv=config.conv)
  graphdef, params, batch_stats = nnx.split(model, nnx.Param, nnx.BatchStat)
  params = params.to_pure_dict()
  state = TrainState(step=jnp.zeros([], jnp.int32), params=params,
                     batch_stats=batch_stats.to_pure_dict(), opt_state=tx.init(params),
                     bad_step=jnp.full([], -1, jnp.int32))
  return graphdef, state


# ----------------------------------------------------------------------------- outputs


def data_fingerprint(dataset) -> str:
  """A hash of every split's images and labels: what the run was trained on."""
  digest = hashlib.blake2b(digest_size=16)
  for split in (dataset.train, dataset.validation, dataset.test):
    if split is not None:
      digest.update(np.ascontiguousarray(split.images).data)
      digest.update(np.ascontiguousarray(split.labels).data)
  return digest.hexdigest()


# run.json fields that must not change when a run resumes: the data it trains on.
DATA_IDENTITY = ("dataset", "num_train", "num_validation", "num_test", "num_classes",
                 "steps_per_epoch", "data_fingerprint")


def check_same_data(workdir: str, info: dict) -> None:
  """Refuses to resume on other data than the run started with (compares ``run.json``)."""
  path = os.path.join(workdir, "run.json")
  if not os.path.exists(path):
    return
  with open(path) as f:
    before = json.load(f)
  changed = [f"{k} {before[k]!r} -> {info[k]!r}" for k in DATA_IDENTITY
             if k in before and k in info and before[k] != info[k]]
  if changed:
    raise ValueError(
        f"workdir: {workdir!r} holds a run trained on other data ({'; '.join(changed)}); "
        "point data_dir/image_folder at the data it started with, or use a new workdir")


def network_depth(graphdef, state, image_shape) -> dict[str, int]:
  """Each layer's position in the forward pass (0: the stem), from a trace of the model."""
  image = jnp.zeros((1, *image_shape), jnp.float32)
  forward = lambda params: nnx.merge(graphdef, params, state.batch_stats)(image, train=False)
  order = layers_lib.network_order(forward, state.params)
  return {name: depth for depth, name in enumerate(order)}


def in_network_order(rows: list[dict], depth: dict[str, int]) -> list[dict]:
  """Per-layer rows sorted by depth, with ``index`` = the layer's depth."""
  return sorted((dict(r, index=depth[r["layer"]]) for r in rows), key=lambda r: r["index"])


def run_info(config, dataset, steps_per_epoch, params, depth: dict[str, int]) -> dict:
  index = layers_lib.layer_index(params)
  eligible = layers_lib.eligible_mask(index, config.amplification.eligible)
  layers = [dict(layer=n, params=list(p), size=s, eligible=e) for n, p, s, e in zip(
      index.names, index.param_names, index.layer_sizes(), eligible)]
  return dict(
      jax_version=jax.__version__, devices=[str(d) for d in jax.devices()],
      process_count=jax.process_count(), dataset=dataset.name,
      num_train=len(dataset.train),
      num_validation=0 if dataset.validation is None else len(dataset.validation),
      num_test=len(dataset.test), data_fingerprint=data_fingerprint(dataset),
      num_classes=dataset.num_classes, steps_per_epoch=steps_per_epoch,
      layers=in_network_order(layers, depth),
      layer_rule="a layer is a parameter path without its last key; layers are listed "
                 "in network order (index: position in the forward pass)",
      eligible_rule=config.amplification.eligible)


def layer_stat_rows(config, opt_state, params) -> list[dict]:
  """``layer_stats.jsonl`` rows of the latest selection; matched random also keeps the
  measure's own choice (``selected_by_measure``), so the overlap can be reported."""
  amp = config.amplification
  measured = amp.method in MEASURED_METHODS
  rows = []
  for r in ga.selection_report(opt_state, params):
    row = dict(epoch=r["epoch"], step=r["step"], layer=r["layer"],
               measure=amp.measure if measured else None,
               value=finite_or_none(r["measure"]) if measured else None,
               normalized=finite_or_none(r["normalized"]) if measured else None,
               selected=r["selected"], factor=r["factor"], eligible=r["eligible"],
               method=amp.method)
    if amp.method == "matched_random":
      row["selected_by_measure"] = r["selected_by_measure"]
    rows.append(row)
  return rows


def directionality_rows(opt_state, params, eligible: dict[str, bool]) -> list[dict]:
  """``directionality.jsonl`` rows: G and G′ of every layer for the last finished epoch."""
  return [dict(epoch=r["epoch"], layer=r["layer"], eligible=eligible[r["layer"]],
               G=finite_or_none(r["G"]), G_prime=finite_or_none(r["G_prime"]))
          for r in ga.directionality_report(opt_state, params)]


# ----------------------------------------------------------------------------- loops


class _Progress:
  """A progress bar over an epoch's steps on a terminal, advanced per chunk; else nothing."""

  def __init__(self, epoch: int, start: int, steps: int, batch_size: int):
    self.bar = None
    if sys.stderr.isatty():
      from tqdm import tqdm
      self.bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch}", leave=False,
                      unit="step")
    self.batch_size, self.begin, self.done = batch_size, time.perf_counter(), 0

  def update(self, steps: int, loss) -> None:
    loss = float(loss)  # waits for the chunk that computed it
    if self.bar is not None:
      self.done += steps
      rate = self.done * self.batch_size / (time.perf_counter() - self.begin)
      self.bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", refresh=False)
      self.bar.update(steps)

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


def chunk_bounds(start: int, stop: int, size: int) -> list[tuple[int, int]]:
  """``[start, stop)`` cut into consecutive ranges of at most ``size`` steps."""
  return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def train_epoch(train_chunk, state, data, plan, history, *, epoch: int, start: int,
                steps: int, chunk: int, batch_size: int, stop=None):
  """Runs steps ``start, ..., steps - 1`` of an epoch, ``chunk`` steps per call.

  While a chunk runs, the host waits for the one before it (its last loss shows on the
  progress bar), so the device never waits for the host and a ``stop()`` request (checked
  after each call but the epoch's last) takes effect within two chunks.

  Returns:
    The new state, the history (see :func:`make_train_chunk`) and the number of steps of
    the epoch done.
  """
  progress = _Progress(epoch, start, steps, batch_size)
  done, pending = start, None
  try:
    for a, b in chunk_bounds(start, steps, chunk):
      state, history, loss = train_chunk(state, data, plan, a, b, history)
      if pending is not None:
        progress.update(*pending)  # waits for the previous chunk
      pending, done = (b - a, loss), b
      if stop is not None and done < steps and stop():
        break
    if pending is not None:
      progress.update(*pending)
  finally:
    progress.close()
  return state, history, done


def load_dataset(config) -> input_pipeline.Dataset:
  """Reads the data; with several processes the lead first (it may download and prepare
  it), then the others read what it prepared."""
  def load(download):
    return input_pipeline.load(
        config.dataset, data_dir=config.data_dir, image_folder=config.image_folder,
        train_split=config.train_split, validation_fraction=config.validation_fraction,
        seed=config.seed, download=download)

  if jax.process_count() == 1:
    return load(config.download)
  dataset = load(config.download) if jax.process_index() == 0 else None
  checkpointing.sync("dataset prepared")
  return dataset if dataset is not None else load(download=False)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       until_epoch: int | None = None) -> dict:
  """Trains ``config.model`` on ``config.dataset`` with the configured amplification.

  Resumes from the newest checkpoint in ``workdir`` that restores (one a fork wrote,
  :mod:`gradamp_jax.fork`, included); a finished run is not re-run. Holds ``workdir``'s
  lock (``workdir_lock``) while it runs.

  Args:
    config: see ``configs/default.py`` for the fields.
    workdir: output directory.
    until_epoch: stop after this epoch's checkpoint (a segment of the run; running
      again without it continues); None trains to the end of the schedule.

  Returns:
    The last epoch's metrics row.

  Raises:
    ValueError: for a bad config (before anything is compiled), or a workdir holding
      another run or results that no checkpoint restores.
    WorkdirBusyError: another run holds ``workdir``.
    NonFiniteError: when the loss or gradients stop being finite; the last good
      checkpoint is kept.
    Preempted: a signal asked the run to stop; a checkpoint at that step was saved.
  """
  validate_config(config)
  lock = None
  if jax.process_index() == 0:  # the lead writes every file but the checkpoints' shards
    check_workdir(workdir)
    lock = WorkdirLock(workdir).acquire()
  try:
    check_same_experiment(config, workdir)
    return _train(config, workdir, until_epoch)
  finally:
    if lock is not None:
      lock.release()


def _train(config, workdir: str, until_epoch: int | None = None) -> dict:
  is_lead = jax.process_index() == 0
  dataset = load_dataset(config)
  steps_per_epoch = input_pipeline.steps_per_epoch(len(dataset.train), config.batch_size)
  phases = ga.parse_phases(config.phases)
  num_epochs = phases[-1].end_epoch
  last_epoch = num_epochs if until_epoch is None else min(int(until_epoch), num_epochs)
  lr_schedule = ga.learning_rate_schedule(phases, steps_per_epoch)

  tx = create_optimizer(config, steps_per_epoch)
  graphdef, state = create_train_state(config, dataset.num_classes, tx)

  mesh = Mesh(np.array(jax.devices()), ("data",))
  replicated = NamedSharding(mesh, P())
  data_sharding = NamedSharding(mesh, P("data"))
  # Every process holds the same values (the state it built, the metrics it restored).
  replicate = lambda tree: jax.tree.map(lambda x: input_pipeline.place(x, replicated), tree)
  state = replicate(state)
  state_sharding = jax.tree.map(lambda _: replicated, state)
  # The data lives on the devices as uint8; batches are gathered and augmented in the step.
  per_call = steps_per_call(config)
  if per_call > 1 and jax.default_backend() == "cpu" and is_lead:
    print(f"warning: steps_per_dispatch={per_call} runs the steps in a loop, which XLA:CPU "
          "compiles to much slower convolution gradients (30x for resnet8 in BENCHMARKS.md); "
          "0 (automatic) runs one step per call on a CPU", file=sys.stderr, flush=True)
  train_data = input_pipeline.to_device(dataset.train, mesh)
  eval_data = {name: input_pipeline.to_device_batches(split, config.eval_batch_size, mesh)
               for name, split in (("test", dataset.test), ("val", dataset.validation))
               if split is not None}
  make_plan = jax.jit(functools.partial(input_pipeline.epoch_plan,
                                        num_examples=len(dataset.train),
                                        batch_size=config.batch_size),
                      out_shardings=replicated)
  # A chunk donates the state and the history (updated in place, no copy per step).
  # Orbax's asynchronous save may still read a saved state while later chunks run, so it
  # gets its own copy.
  train_chunk = jax.jit(
      make_train_chunk(graphdef, tx, dataset.mean, dataset.std, data_sharding,
                       loop=per_call > 1),
      in_shardings=(state_sharding, replicated, replicated, None, None, replicated),
      out_shardings=(state_sharding, replicated, replicated), donate_argnums=(0, 5))
  copy_state = jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=state_sharding)
  evaluate = jax.jit(make_evaluate(graphdef, dataset.mean, dataset.std, data_sharding),
                     in_shardings=(state_sharding, None), out_shardings=replicated)

  def new_history(carried):
    """Per-step metrics of an epoch; ``carried``: those of steps run before a restart."""
    history = {k: np.zeros(steps_per_epoch, np.float32) for k in STEP_METRICS}
    for k, v in (carried or {}).items():
      history[k][:len(v)] = v
    return replicate(history)

  # Checkpoints are indexed by update count: epoch ends, and a step where a signal stopped.
  checkpoint_dir = os.path.abspath(os.path.join(workdir, "checkpoints"))
  checkpoints = ocp.CheckpointManager(
      checkpoint_dir,
      options=ocp.CheckpointManagerOptions(max_to_keep=config.keep_checkpoints, create=True))
  partial = checkpointing.PartialEpoch(workdir, steps_per_epoch)
  start_step, state = checkpointing.restore_newest(checkpoints, state, workdir,
                                                   check=partial.check)
  if start_step:
    print(f"Resumed from the checkpoint at update {start_step} (epoch "
          f"{start_step / steps_per_epoch:.4g}) in {workdir}", flush=True)
  if start_step >= last_epoch * steps_per_epoch:
    print(f"Run in {workdir} already trained {start_step // steps_per_epoch} of "
          f"{num_epochs} epochs (asked for {last_epoch}); nothing to do.", flush=True)
    checkpoints.close()
    return read_jsonl(os.path.join(workdir, "metrics.jsonl"))[-1]

  resumed = start_step > 0
  depth = network_depth(graphdef, state, dataset.train.images.shape[1:])
  info = run_info(config, dataset, steps_per_epoch, state.params, depth)
  if resumed:
    check_same_data(workdir, info)
  metrics_log = stats_log = directionality_log = summary = None
  if is_lead:
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=2))
    with open(os.path.join(workdir, "run.json"), "w") as f:
      json.dump(info, f, indent=2)
    epochs_done = start_step // steps_per_epoch
    metrics_log = JsonlWriter(os.path.join(workdir, "metrics.jsonl"),
                              keep=(lambda r: r["epoch"] <= epochs_done) if resumed else None)
    stats_log = JsonlWriter(os.path.join(workdir, "layer_stats.jsonl"),
                            keep=(lambda r: r["step"] < start_step) if resumed else None)
    directionality_log = JsonlWriter(
        os.path.join(workdir, "directionality.jsonl"),
        keep=(lambda r: r["epoch"] <= epochs_done) if resumed else None)
    from tensorboardX import SummaryWriter
    summary = SummaryWriter(os.path.join(workdir, "tensorboard"))
  eligible = {layer["layer"]: layer["eligible"] for layer in info["layers"]}
  amplified = config.amplification.method != "none"
  logged_selections = int(ga.find_state(state.opt_state).num_selections) if amplified else 0

  def log_new_selections():
    nonlocal logged_selections
    selections = int(ga.find_state(state.opt_state).num_selections) if amplified else 0
    if selections > logged_selections:
      logged_selections = selections
      if is_lead:
        stats_log.write(in_network_order(
            layer_stat_rows(config, state.opt_state, state.params), depth))

  def check_finite(epoch):
    bad_step = int(state.bad_step)
    if bad_step >= 0:
      kept = (f"the last good checkpoint is kept in {checkpoint_dir}" if checkpoints.all_steps()
              else "no checkpoint yet")
      raise NonFiniteError(f"non-finite loss or gradients at epoch {epoch}, step {bad_step} "
                           f"(0-based update count); {kept}")

  row = None
  carried = partial.metrics if start_step % steps_per_epoch else None
  try:
    with preemption.StopRequest() as stop:
      for epoch in range(start_step // steps_per_epoch + 1, last_epoch + 1):
        started = time.perf_counter()
        offset = max(start_step - (epoch - 1) * steps_per_epoch, 0)
        state, history, done_in_epoch = train_epoch(
            train_chunk, state, train_data, make_plan(config.seed, epoch),
            new_history(carried), epoch=epoch, start=offset, steps=steps_per_epoch,
            chunk=per_call, batch_size=config.batch_size,
            stop=stop.requested)
        carried = None
        steps = {k: v[:done_in_epoch] for k, v in jax.device_get(history).items()}
        check_finite(epoch)
        done = (epoch - 1) * steps_per_epoch + done_in_epoch
        if done_in_epoch < steps_per_epoch:  # a signal: checkpoint here and stop
          log_new_selections()
          partial.save(done, steps)
          checkpoints.save(done, args=ocp.args.StandardSave(state))
          checkpoints.wait_until_finished()  # no step follows: no copy needed
          raise preemption.Preempted(stop.signame, done, checkpoint_dir)
        train_seconds = time.perf_counter() - started
        mean = {k: float(np.mean(v)) for k, v in steps.items()}
        row = dict(epoch=epoch, step=epoch * steps_per_epoch,
                   lr=float(lr_schedule((epoch - 1) * steps_per_epoch)),
                   train_loss=mean["loss"], train_accuracy=mean["accuracy"],
                   grad_norm=mean["grad_norm"])
        for name, split in eval_data.items():
          sums = jax.device_get(evaluate(state, split))
          count = float(sums["count"])
          row[f"{name}_loss"] = float(sums["loss"]) / count
          row[f"{name}_accuracy"] = float(sums["correct"]) / count
        amp_state = jax.device_get(ga.find_state(state.opt_state)) if amplified else None
        row["amplified_layers"] = (int(np.sum(amp_state.mask)) if amplified and amp_state.active
                                   else 0)
        log_new_selections()
        directions = (in_network_order(
            directionality_rows(state.opt_state, state.params, eligible), depth)
                      if config.track_directionality else [])
        row["epoch_seconds"] = time.perf_counter() - started
        row["images_per_second"] = (done_in_epoch - offset) * config.batch_size / train_seconds
        if is_lead:
          metrics_log.write([row])
          directionality_log.write(directions)
          for key, value in row.items():
            if key not in ("epoch", "step"):
              summary.add_scalar(key, value, epoch)
          summary.flush()
        checkpoints.save(epoch * steps_per_epoch,
                         args=ocp.args.StandardSave(copy_state(state)))
        if is_lead:
          print(f"epoch {epoch}/{num_epochs}  lr {row['lr']:.4g}  train loss "
                f"{row['train_loss']:.4f} acc {row['train_accuracy']:.4f}  test loss "
                f"{row['test_loss']:.4f} acc {row['test_accuracy']:.4f}  amplified "
                f"{row['amplified_layers']} layers  {row['epoch_seconds']:.1f}s "
                f"({row['images_per_second']:.0f} img/s)", flush=True)
        if epoch < last_epoch and stop.requested():  # a signal during the epoch's last step
          checkpoints.wait_until_finished()
          raise preemption.Preempted(stop.signame, epoch * steps_per_epoch, checkpoint_dir)
  finally:
    checkpoints.wait_until_finished()
    checkpoints.close()
    if summary is not None:
      summary.close()
  return row
