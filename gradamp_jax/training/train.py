"""Training and evaluation: ``train_and_evaluate(config, workdir)``.

A run is the paper's Figure 1 as a loop: set up (data on the device, the optimizer with its
amplification, the state, the compiled functions, the newest checkpoint), then per epoch:
train its steps in chunks, evaluate, record (:class:`~gradamp_jax.training.outputs.RunOutputs`),
checkpoint, and stop if a signal asked. Running the same command again resumes from the
newest checkpoint; the files a run writes are listed in :mod:`gradamp_jax.training.outputs`.
"""

from __future__ import annotations

import contextlib
import functools
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gradamp_jax as ga
from gradamp_jax import input_pipeline, run_folder
from gradamp_jax.training import checkpointing, conv_choice, optimizer, outputs, preemption
from gradamp_jax.training import steps as steps_lib
from gradamp_jax.training.config_fields import validate_config
from gradamp_jax.training.workdir_lock import WorkdirBusyError, WorkdirLock

__all__ = ["NonFiniteError", "WorkdirBusyError", "train_and_evaluate"]


class NonFiniteError(RuntimeError):
  """The loss or the gradients became NaN or infinite."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, until_epoch: int | None = None
) -> dict:
  """Trains ``config.model`` on ``config.dataset`` with the configured amplification.

  Resumes from the newest checkpoint in ``workdir`` that restores (one a fork wrote,
  :mod:`gradamp_jax.sweeps.fork`, included); a finished run is not re-run. Holds
  ``workdir``'s lock (:mod:`~gradamp_jax.training.workdir_lock`) while it runs.

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
  config = conv_choice.resolve(config, workdir)
  with workdir_lock(workdir):
    outputs.check_same_experiment(config, workdir)
    done = already_done(config, workdir, until_epoch)
    if done is not None:
      return done
    row = _train(config, workdir, until_epoch)
    if jax.process_index() == 0:
      outputs.print_summary(workdir, ga.num_epochs(config.phases))
    return row


def already_done(config, workdir: str, until_epoch: int | None) -> dict | None:
  """The last metrics row when ``metrics.jsonl`` and the newest checkpoint that restores
  already hold every epoch asked for, found without reading the data or compiling the
  programs (``run.json`` gives the state's shapes); else None. (One process only: the
  processes of a run decide together, after restoring.)"""
  rows = run_folder.read_rows(workdir, run_folder.METRICS, missing_ok=True)
  info = run_folder.read_json(workdir, run_folder.RUN_INFO, default=None)
  num_epochs = ga.num_epochs(config.phases)
  asked = num_epochs if until_epoch is None else min(int(until_epoch), num_epochs)
  if jax.process_count() > 1 or not rows or not info or rows[-1]["epoch"] < asked:
    return None
  spe = info["steps_per_epoch"]
  tx = optimizer.create_optimizer(config, spe)
  _, target = steps_lib.create_train_state(config, info["num_classes"], tx)
  with checkpointing.RunCheckpoints(
    workdir, keep=config.keep_checkpoints, steps_per_epoch=spe
  ) as checkpoints:
    step, _, _ = checkpoints.restore(target)  # sets aside any that does not restore
  if step != rows[-1].get("step"):
    return None  # training goes on from the checkpoint that restores
  _print_nothing_to_do(workdir, rows[-1]["epoch"], num_epochs, asked)
  return rows[-1]


def _print_nothing_to_do(workdir: str, trained: int, num_epochs: int, asked: int) -> None:
  print(
    f"Run in {workdir} already trained {trained} of {num_epochs} epochs (asked for "
    f"{asked}); nothing to do.",
    flush=True,
  )


def _train(config, workdir: str, until_epoch: int | None) -> dict:
  run = Run.create(config)
  spe = run.steps_per_epoch
  last_epoch = run.num_epochs if until_epoch is None else min(int(until_epoch), run.num_epochs)
  with checkpointing.RunCheckpoints(
    workdir, keep=config.keep_checkpoints, steps_per_epoch=spe
  ) as checkpoints:
    start_step, state, carried = checkpoints.restore(run.initial_state)
    if start_step:
      print(
        f"Resumed from the checkpoint at update {start_step} (epoch "
        f"{start_step / spe:.4g}) in {workdir}",
        flush=True,
      )
    if start_step >= last_epoch * spe:
      _print_nothing_to_do(workdir, start_step // spe, run.num_epochs, last_epoch)
      return outputs.last_metrics(workdir)
    records = run.open_outputs(workdir, state, start_step)
    row = None
    try:
      with preemption.StopRequest() as stop:
        first = start_step // spe + 1
        for epoch in range(first, last_epoch + 1):
          started = time.perf_counter()
          offset = max(start_step - (epoch - 1) * spe, 0)
          state, metrics = run.train_epoch(state, epoch, offset, carried, stop.requested)
          carried = None
          _check_finite(state, epoch, checkpoints)
          done = (epoch - 1) * spe + len(metrics["loss"])
          if done < epoch * spe:  # a signal: checkpoint here and stop
            records.record_selections(state)
            checkpoints.save_interrupted(done, state, metrics)
            raise preemption.Preempted(stop.signame, done, checkpoints.directory)
          row = run.epoch_row(epoch, state, metrics, offset, started)
          row[run_folder.FIRST_AFTER_START] = epoch == first  # warm-up: not comparable
          records.record_epoch(row, state)
          checkpoints.save(done, run.programs.copy_state(state))
          if epoch < last_epoch and stop.requested():  # a signal in the epoch's last step
            checkpoints.manager.wait_until_finished()
            raise preemption.Preempted(stop.signame, done, checkpoints.directory)
    finally:
      records.close()
  return row


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds ``workdir``'s lock in the lead process (which writes every file but the
  checkpoints' shards)."""
  if jax.process_index() != 0:
    yield
    return
  outputs.check_workdir(workdir)
  lock = WorkdirLock(workdir).acquire()
  try:
    yield
  finally:
    lock.release()


def _check_finite(state, epoch: int, checkpoints: checkpointing.RunCheckpoints) -> None:
  bad_step = int(state.bad_step)
  if bad_step >= 0:
    raise NonFiniteError(
      f"non-finite loss or gradients at epoch {epoch}, step {bad_step} "
      f"(0-based update count); {checkpoints.describe_kept()}"
    )


# ----------------------------------------------------------------------------- set-up


class Programs(NamedTuple):
  """A run's jitted functions, with the shardings of what they take.

  ``train_chunk`` (:func:`~gradamp_jax.training.steps.make_train_chunk`) donates the
  history and, when it loops, the state (:func:`~gradamp_jax.training.steps.chunk_donation`);
  orbax's asynchronous save may still read a saved state while later chunks run, so a saved
  state is ``copy_state`` of it.
  """

  train_chunk: Callable
  evaluate: Callable
  epoch_plan: Callable
  copy_state: Callable
  replicate: Callable  # a host pytree every process holds -> replicated arrays
  steps_per_call: int


def compile_programs(config, dataset, graphdef, tx, state, mesh: Mesh) -> Programs:
  """The jitted functions of a run over ``mesh`` (1-D, axis ``data``)."""
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  state_sharding = jax.tree.map(lambda _: replicated, state)
  per_call = steps_lib.steps_per_call(config)
  chunk = steps_lib.make_train_chunk(
    graphdef, tx, dataset.mean, dataset.std, batch_sharding, loop=per_call > 1
  )
  plan = functools.partial(
    input_pipeline.epoch_plan, num_examples=len(dataset.train), batch_size=config.batch_size
  )
  evaluate = steps_lib.make_evaluate(graphdef, dataset.mean, dataset.std, batch_sharding)
  return Programs(
    train_chunk=jax.jit(
      chunk,
      donate_argnums=steps_lib.chunk_donation(per_call > 1),
      in_shardings=(state_sharding, replicated, replicated, None, None, replicated),
      out_shardings=(state_sharding, replicated, replicated),
    ),
    evaluate=jax.jit(evaluate, in_shardings=(state_sharding, None), out_shardings=replicated),
    epoch_plan=jax.jit(plan, out_shardings=replicated),
    copy_state=jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=state_sharding),
    replicate=lambda tree: jax.tree.map(lambda x: input_pipeline.place(x, replicated), tree),
    steps_per_call=per_call,
  )


def data_args(config) -> dict:
  """The config's data fields as :func:`~gradamp_jax.input_pipeline.load` takes them, less
  the dataset and the seed."""
  return dict(
    data_dir=config.data_dir,
    image_folder=config.image_folder,
    train_split=config.train_split,
    validation_fraction=config.validation_fraction,
    download=config.download,
  )


def load_dataset(config) -> input_pipeline.Dataset:
  """Reads the data; with several processes the lead first (it may download and prepare
  it), then the others read what it prepared."""

  def load(download):
    return input_pipeline.load(
      config.dataset, seed=config.seed, **dict(data_args(config), download=download)
    )

  if jax.process_count() == 1:
    return load(config.download)
  dataset = load(config.download) if jax.process_index() == 0 else None
  checkpointing.sync("dataset prepared")
  return dataset if dataset is not None else load(download=False)


def steps_per_epoch(config, num_train: int) -> int:
  if num_train < config.batch_size:
    held_out = (
      f" after holding out validation_fraction={config.validation_fraction}"
      if config.validation_fraction
      else ""
    )
    raise ValueError(
      f"config.batch_size: {config.batch_size} exceeds the {num_train} training examples "
      f"of train_split={config.train_split!r}{held_out}, so an epoch holds no full batch; "
      "use a smaller batch_size or a larger train_split"
    )
  return ga.steps_per_epoch(num_train, config.batch_size)


def warn_if_looping_on_cpu(per_call: int) -> None:
  if per_call > 1 and jax.default_backend() == "cpu" and jax.process_index() == 0:
    print(
      f"warning: steps_per_dispatch={per_call} runs the steps in a loop, which XLA:CPU "
      "compiles to much slower convolution gradients (30x for resnet8 in BENCHMARKS.md); "
      "0 (automatic) runs one step per call on a CPU",
      file=sys.stderr,
      flush=True,
    )


class Run(NamedTuple):
  """What a run sets up once: its data (on the device), optimizer, state and programs."""

  config: Any
  dataset: input_pipeline.Dataset
  steps_per_epoch: int
  num_epochs: int
  graphdef: Any
  initial_state: steps_lib.TrainState
  programs: Programs
  train_data: input_pipeline.DeviceSplit
  eval_data: dict[str, input_pipeline.EvalSplit]

  @classmethod
  def create(cls, config) -> Run:
    dataset = load_dataset(config)
    spe = steps_per_epoch(config, len(dataset.train))
    tx = optimizer.create_optimizer(config, spe)
    graphdef, state = steps_lib.create_train_state(config, dataset.num_classes, tx)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    programs = compile_programs(config, dataset, graphdef, tx, state, mesh)
    warn_if_looping_on_cpu(programs.steps_per_call)
    for warning in optimizer.config_warnings(config) if jax.process_index() == 0 else ():
      print(warning, file=sys.stderr, flush=True)
    eval_data = {
      name: input_pipeline.to_device_batches(split, config.eval_batch_size, mesh)
      for name, split in (("test", dataset.test), ("val", dataset.validation))
      if split is not None
    }
    return cls(
      config,
      dataset,
      spe,
      ga.num_epochs(config.phases),
      graphdef,
      programs.replicate(state),
      programs,
      input_pipeline.to_device(dataset.train, mesh),
      eval_data,
    )

  def open_outputs(self, workdir: str, state, start_step: int) -> outputs.RunOutputs:
    """The run's files, after checking that a resumed run trains on the data it started on."""
    depth = outputs.network_depth(self.graphdef, state, self.dataset.train.images.shape[1:])
    info = outputs.run_info(self.config, self.dataset, self.steps_per_epoch, state.params, depth)
    if start_step:
      outputs.check_same_data(workdir, info)
    return outputs.RunOutputs(
      workdir, self.config, info, state, start_step=start_step, write=jax.process_index() == 0
    )

  def train_epoch(self, state, epoch: int, start: int, carried: dict | None, stop):
    """Steps ``start ..`` of ``epoch``; returns the state and the per-step metrics of the
    epoch's steps done (``carried``: those of steps run before a restart)."""
    history = {k: np.zeros(self.steps_per_epoch, np.float32) for k in steps_lib.STEP_METRICS}
    for k, v in (carried or {}).items():
      history[k][: len(v)] = v
    state, history, done = train_epoch(
      self.programs.train_chunk,
      state,
      self.train_data,
      self.programs.epoch_plan(self.config.seed, epoch),
      self.programs.replicate(history),
      epoch=epoch,
      start=start,
      steps=self.steps_per_epoch,
      chunk=self.programs.steps_per_call,
      batch_size=self.config.batch_size,
      stop=stop,
    )
    return state, {k: v[:done] for k, v in jax.device_get(history).items()}

  def epoch_row(self, epoch: int, state, metrics: dict, start: int, started: float) -> dict:
    """``metrics.jsonl``'s row of a finished epoch (:func:`epoch_row`)."""
    train_seconds = time.perf_counter() - started
    sums = {
      name: jax.device_get(self.programs.evaluate(state, split))
      for name, split in self.eval_data.items()
    }
    return epoch_row(
      self.config,
      self.steps_per_epoch,
      epoch,
      metrics,
      sums,
      state.opt_state,
      start=start,
      started=started,
      train_seconds=train_seconds,
    )


def epoch_row(
  config,
  steps_per_epoch: int,
  epoch: int,
  metrics: dict,
  sums: dict,
  opt_state,
  *,
  start: int,
  started: float,
  train_seconds: float,
) -> dict:
  """``metrics.jsonl``'s row of a finished epoch: the means of the per-step ``metrics``
  (steps ``start ..`` timed over ``train_seconds``), the evaluation ``sums`` of each split
  (``test``, ``val``), the amplified layers and the time since ``started``."""
  mean = {k: float(np.mean(v)) for k, v in metrics.items()}
  lr_schedule = ga.learning_rate_schedule(config.phases, steps_per_epoch)
  row = dict(
    epoch=epoch,
    step=epoch * steps_per_epoch,
    lr=float(lr_schedule((epoch - 1) * steps_per_epoch)),
    train_loss=mean["loss"],
    train_accuracy=mean["accuracy"],
    grad_norm=mean["grad_norm"],
  )
  for name, split_sums in sums.items():
    row[f"{name}_loss"] = float(split_sums["loss"]) / float(split_sums["count"])
    row[f"{name}_accuracy"] = float(split_sums["correct"]) / float(split_sums["count"])
  row["amplified_layers"] = outputs.amplified_layers(config, opt_state)
  row["epoch_seconds"] = time.perf_counter() - started
  row["images_per_second"] = (len(metrics["loss"]) - start) * config.batch_size / train_seconds
  return row


# ----------------------------------------------------------------------------- an epoch


class _Progress:
  """A progress bar over an epoch's steps on a terminal, advanced per chunk; else nothing."""

  def __init__(self, epoch: int, start: int, steps: int, batch_size: int):
    self.bar = None
    if sys.stderr.isatty():
      from tqdm import tqdm

      self.bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch}", leave=False, unit="step")
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


def train_epoch(
  train_chunk,
  state,
  data,
  plan,
  history,
  *,
  epoch: int,
  start: int,
  steps: int,
  chunk: int,
  batch_size: int,
  stop=None,
):
  """Runs steps ``start, ..., steps - 1`` of an epoch, ``chunk`` steps per call.

  While a chunk runs, the host waits for the one before it (its last loss shows on the
  progress bar), so the device never waits for the host and a ``stop()`` request (checked
  after each call but the epoch's last) takes effect within two chunks.

  Returns:
    The new state, the history (see
    :func:`~gradamp_jax.training.steps.make_train_chunk`) and the number of steps of the
    epoch done.
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
