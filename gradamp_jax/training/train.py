"""Training and evaluation: one run (``train_and_evaluate``) or a cohort of runs trained
together (``train_cohort``); a run is a cohort of one.

Per epoch: train in chunks, evaluate, record, checkpoint, stop if a signal asked; running
again resumes from the newest checkpoint. A cohort of several trains as one program
``vmap``-ped over its stacked states (:mod:`gradamp_jax.training.cohort`), but on a CPU.
"""

from __future__ import annotations

import contextlib
import functools
import os
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
from gradamp_jax.training import checkpointing, cohort, conv_choice, optimizer, outputs, preemption
from gradamp_jax.training import data as data_lib
from gradamp_jax.training import steps as steps_lib
from gradamp_jax.training.config_fields import validate_config
from gradamp_jax.training.workdir_lock import WorkdirBusyError, WorkdirLock

__all__ = ["NonFiniteError", "WorkdirBusyError", "train_and_evaluate", "train_cohort"]


class NonFiniteError(RuntimeError):
  """The loss or the gradients became NaN or infinite."""


def train_and_evaluate(
  config: ml_collections.ConfigDict, workdir: str, *, until_epoch: int | None = None
) -> dict:
  """Trains ``config.model`` on ``config.dataset`` with the configured amplification.

  Resumes from the newest checkpoint in ``workdir`` that restores; a finished run is not
  re-run. Holds ``workdir``'s lock while it runs.

  Args:
    config: see ``configs/default.py`` for the fields.
    workdir: output directory.
    until_epoch: stop after this epoch's checkpoint; None trains to the end.

  Returns:
    The last epoch's metrics row.

  Raises:
    ValueError: for a bad config, or a workdir holding another run or results that no
      checkpoint restores.
    WorkdirBusyError: another run holds ``workdir``.
    NonFiniteError: the loss or gradients stopped being finite (the last good checkpoint
      is kept).
    Preempted: a signal asked the run to stop, after a checkpoint at that step.
  """
  return train_cohort([config], [workdir], until_epoch=until_epoch)[0]


def train_cohort(
  configs, workdirs, *, until_epoch: int | None = None, stacked: bool | None = None
) -> list[dict]:
  """Trains ``configs`` (differing at most in :func:`~gradamp_jax.training.cohort.cohort_fields`)
  together, each as :func:`train_and_evaluate` would alone, into its own workdir.

  Finished members are left out. A member whose loss goes non-finite stops writing and the
  others go on. Resuming restores every member at the newest update all have a checkpoint of.

  Args:
    configs, workdirs, until_epoch: as :func:`train_and_evaluate` takes them, one per member.
    stacked: train the members as one ``vmap``-ped program (True) or each with its run's
      own program (False); None: stacked for K > 1 but on a CPU.

  Returns:
    Each member's last metrics row.

  Raises:
    ValueError: for a bad config or configs that differ in a field outside
      :func:`~gradamp_jax.training.cohort.cohort_fields` (named).
    NonFiniteError: naming the members that went non-finite, once the others finished.
  """
  for config in configs:
    validate_config(config)
  configs = [conv_choice.resolve(c, w) for c, w in zip(configs, workdirs)]
  if len(configs) > 1:
    cohort.check_cohort(configs, workdirs)
  with contextlib.ExitStack() as locks:
    for config, workdir in zip(configs, workdirs):
      if jax.process_index() == 0:  # the lead process writes the files: it holds the lock
        outputs.check_workdir(workdir)
        locks.enter_context(WorkdirLock(workdir))
      outputs.check_same_experiment(config, workdir)
    rows = [already_done(c, w, until_epoch) for c, w in zip(configs, workdirs)]
    todo = [k for k, row in enumerate(rows) if row is None]
    if todo:
      members = Members.create([configs[k] for k in todo], [workdirs[k] for k in todo], stacked)
      for k, row in zip(todo, _train(members, until_epoch)):
        rows[k] = row
        if jax.process_index() == 0:
          outputs.print_summary(workdirs[k], ga.num_epochs(configs[k].phases))
  return rows


def _print_warnings(configs, workdirs) -> None:
  """Each member's config warnings once, prefixed with its members where not all have it."""
  found = [optimizer.config_warnings(c) for c in configs]
  for warning in dict.fromkeys(w for ws in found for w in ws):
    owners = [_member_name(w) for w, ws in zip(workdirs, found) if warning in ws]
    prefix = "" if len(owners) == len(configs) else f"[{', '.join(owners)}] "
    print(prefix + warning, file=sys.stderr, flush=True)


def _member_name(workdir: str) -> str:
  """How messages name a cohort member: its run folder's name."""
  return os.path.basename(os.path.normpath(workdir))


def last_epoch(num_epochs: int, until_epoch: int | None) -> int:
  """The last epoch a call trains: the schedule's, or ``until_epoch`` if sooner."""
  return num_epochs if until_epoch is None else min(int(until_epoch), num_epochs)


def already_done(config, workdir: str, until_epoch: int | None) -> dict | None:
  """The last metrics row if the run holds every epoch asked for (no data, no compiling)."""
  rows = run_folder.read_rows(workdir, run_folder.METRICS, missing_ok=True)
  info = run_folder.read_json(workdir, run_folder.RUN_INFO, default=None)
  num_epochs = ga.num_epochs(config.phases)
  asked = last_epoch(num_epochs, until_epoch)
  if jax.process_count() > 1 or not rows or not info or rows[-1]["epoch"] < asked:
    return None
  spe = info["steps_per_epoch"]
  tx = optimizer.create_optimizer(config, spe)
  shapes = jax.eval_shape(lambda: steps_lib.create_train_state(config, info["num_classes"], tx)[1])
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), shapes)
  with checkpointing.RunCheckpoints(
    workdir, keep=config.keep_checkpoints, steps_per_epoch=spe
  ) as checkpoints:
    step, _, _ = checkpoints.restore(target)  # sets aside any that does not restore
  if step != rows[-1].get("step"):
    return None  # training goes on from the checkpoint that restores
  _print_nothing_to_do(workdir, rows[-1]["epoch"], num_epochs, asked)
  return rows[-1]


def _print_nothing_to_do(workdir: str, trained: int, num_epochs: int, asked: int) -> None:
  epochs = f"{trained} of {num_epochs} epochs (asked for {asked})"
  print(f"Run in {workdir} already trained {epochs}; nothing to do.", flush=True)


# ----------------------------------------------------------------------------- the loop


def _train(members: Members, until_epoch: int | None) -> list[dict]:
  spe, workdirs = members.steps_per_epoch, members.workdirs
  last = last_epoch(members.num_epochs, until_epoch)
  if len(workdirs) > 1:
    print(f"cohort of {len(workdirs)} runs: {', '.join(workdirs)}", flush=True)
  with contextlib.ExitStack() as exits:
    checkpoints = [
      exits.enter_context(
        checkpointing.RunCheckpoints(w, keep=c.keep_checkpoints, steps_per_epoch=spe)
      )
      for c, w in zip(members.configs, workdirs)
    ]
    start_step, states, carried = _restore(members, checkpoints)
    if start_step:
      who = "every member from its checkpoint" if len(workdirs) > 1 else "from the checkpoint"
      where = "" if len(workdirs) > 1 else f" in {workdirs[0]}"
      at = f"at update {start_step} (epoch {start_step / spe:.4g})"
      print(f"Resumed {who} {at}{where}", flush=True)
    if start_step >= last * spe:
      for w in workdirs:
        _print_nothing_to_do(w, start_step // spe, members.num_epochs, last)
      return [outputs.last_metrics(w) for w in workdirs]
    records = [members.open_outputs(k, s, start_step) for k, s in enumerate(states)]
    exits.callback(lambda: [r.close() for r in records])
    return _epochs(members, states, carried, start_step, last, checkpoints, records)


def _restore(members: Members, checkpoints: list) -> tuple[int, list, list]:
  """Each member's state at the newest update all have a checkpoint of, and that epoch's metrics."""
  restored = [c.restore(s) for c, s in zip(checkpoints, members.initial_states)]
  newest = min(step for step, _, _ in restored)
  kept = set.intersection(*(set(c.steps()) for c in checkpoints)) | {0}
  common = max(s for s in kept if s <= newest)
  states, carried = [], []
  for k, (step, state, metrics) in enumerate(restored):
    if step != common:
      state = members.initial_states[k] if common == 0 else checkpoints[k].restore_at(common, state)
      metrics = None
      if common % members.steps_per_epoch:
        checkpoints[k].partial.check(common, state)
        metrics = checkpoints[k].partial.metrics
    states.append(state)
    carried.append(metrics)
  return common, states, carried


def _epochs(members: Members, states, carried, start_step, last, checkpoints, records) -> list:
  """The epochs of :func:`_train`: train, check each member, record, checkpoint, stop."""
  spe, workdirs = members.steps_per_epoch, members.workdirs
  failed: dict[int, str] = {}  # member -> why it stopped
  rows = [outputs.last_metrics(w) if start_step else None for w in workdirs]
  groups = members.stack(states)
  where = checkpoints[0].directory if len(workdirs) == 1 else "each member's workdir"
  with preemption.StopRequest() as stop:
    first = start_step // spe + 1
    for epoch in range(first, last + 1):
      started = time.perf_counter()
      offset = max(start_step - (epoch - 1) * spe, 0)
      groups, metrics = members.train_epoch(groups, epoch, offset, carried, stop.requested)
      carried, states = [None] * len(workdirs), members.split(groups)
      _check_members(members, states, epoch, checkpoints, failed)
      live = [k for k in range(len(workdirs)) if k not in failed]
      done = (epoch - 1) * spe + len(metrics[0]["loss"])
      if done < epoch * spe:  # a signal: checkpoint every member here and stop
        for k in live:
          records[k].record_selections(states[k])
          checkpoints[k].save_interrupted(done, states[k], metrics[k])
        raise preemption.Preempted(stop.signame, done, where)
      epoch_rows = members.epoch_rows(epoch, groups, states, metrics, offset, started)
      for k in live:
        epoch_rows[k][run_folder.FIRST_AFTER_START] = epoch == first  # warm-up: not comparable
        records[k].record_epoch(epoch_rows[k], states[k])
        checkpoints[k].save(done, states[k])
        rows[k] = epoch_rows[k]
      if epoch < last and stop.requested():  # a signal in the epoch's last step
        for c in checkpoints:
          c.manager.wait_until_finished()
        raise preemption.Preempted(stop.signame, done, where)
  if failed:
    raise NonFiniteError(_failures(members, failed))
  return rows


def _check_members(members: Members, states, epoch: int, checkpoints, failed: dict) -> None:
  """Adds the members that went non-finite to ``failed``; raises once none is left."""
  for k, state in enumerate(states):
    bad_step = int(state.bad_step)
    if bad_step >= 0 and k not in failed:
      failed[k] = (
        f"non-finite loss or gradients at epoch {epoch}, step {bad_step} (0-based update "
        f"count); {checkpoints[k].describe_kept()}"
      )
      if len(failed) < len(states):
        why = _failures(members, {k: failed[k]})  # "cohort member NAME: why"
        print(f"error: {why}; the others go on", file=sys.stderr, flush=True)
  if len(failed) == len(states):
    raise NonFiniteError(_failures(members, failed))


def _failures(members: Members, failed: dict) -> str:
  if len(members.workdirs) == 1:
    return failed[0]
  return "; ".join(
    f"cohort member {members.workdirs[k]}: {why}" for k, why in sorted(failed.items())
  )


# ----------------------------------------------------------------------------- set-up


class Programs(NamedTuple):
  """The jitted functions that train one member, or several ``vmap``-ped as one state."""

  members: tuple[int, ...]  # positions in the cohort
  train_chunk: Callable  # (state, data, plan, start, stop, history) -> (state, history, loss)
  evaluate: Callable  # state -> {split: {sum: a value, or one per member when stacked}}
  epoch_plan: Callable  # epoch -> the members' plans
  put_history: Callable  # {metric: host (len(members), steps)} -> the chunk's history
  stack: Callable  # the members' states -> state
  split: Callable  # state -> the members' states


def _jit_run(config, spe, graphdef, tx, state, mean, std, mesh: Mesh) -> dict:
  """A run's jitted functions over ``mesh`` (axis ``data``), shared across seeds."""
  replicated = NamedSharding(mesh, PartitionSpec())
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  state_sharding = jax.tree.map(lambda _: replicated, state)
  loop = steps_lib.steps_per_dispatch(config) > 1
  chunk = steps_lib.make_train_chunk(graphdef, tx, mean, std, batch_sharding, loop=loop)
  evaluate = steps_lib.make_evaluate(graphdef, mean, std, batch_sharding)
  plan = functools.partial(data_lib.member_plan, batch_size=config.batch_size)
  return dict(
    train_chunk=jax.jit(
      chunk,
      donate_argnums=steps_lib.chunk_donation(loop),
      in_shardings=(state_sharding, replicated, replicated, None, None, replicated),
      out_shardings=(state_sharding, replicated, replicated),
    ),
    evaluate=jax.jit(evaluate, in_shardings=(state_sharding, None), out_shardings=replicated),
    epoch_plan=jax.jit(plan, out_shardings=replicated),
    copy=jax.jit(lambda s: jax.tree.map(jnp.copy, s), out_shardings=state_sharding),
  )


def _run_programs(k: int, jitted: dict, seed: int, keep, eval_data: dict, mesh) -> Programs:
  """Member ``k``'s :class:`Programs` from its run's ``jitted`` functions (:func:`_jit_run`)."""
  return Programs(
    members=(k,),
    train_chunk=jitted["train_chunk"],
    evaluate=lambda state: {n: jitted["evaluate"](state, s) for n, s in eval_data.items()},
    epoch_plan=lambda epoch: jitted["epoch_plan"](seed, keep, epoch),
    put_history=lambda history: _replicate({n: v[0] for n, v in history.items()}, mesh),
    stack=lambda states: states[0],
    split=lambda state: [jitted["copy"](state)],
  )


def _stacked_programs(configs, spe, graphdef, mean, std, keep, eval_data, mesh) -> Programs:
  """Every member's :class:`Programs` as one ``vmap``-ped program (``val`` stacked)."""
  per_dispatch = steps_lib.steps_per_dispatch(configs[0])
  rules = cohort.member_rules(configs)
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  replicated = NamedSharding(mesh, PartitionSpec())
  chunk = cohort.make_cohort_chunk(
    configs[0], spe, graphdef, mean, std, batch_sharding, loop=per_dispatch > 1
  )
  evaluate = steps_lib.make_evaluate(graphdef, mean, std, batch_sharding)
  seeds = np.asarray([c.seed for c in configs], np.int32)
  plan = functools.partial(data_lib.member_plan, batch_size=configs[0].batch_size)

  @jax.jit
  def evaluate_all(state, eval_data):
    axes = cohort.member_axes(state)
    return {
      name: jax.vmap(evaluate, in_axes=(axes, 0 if name == "val" else None))(state, split)
      for name, split in eval_data.items()
    }

  # The members' numbers are arguments: one program serves every cohort of K members.
  train_chunk = jax.jit(chunk, donate_argnums=steps_lib.chunk_donation(per_dispatch > 1))
  plans = jax.jit(jax.vmap(plan, in_axes=(0, 0, None)))
  return Programs(
    members=tuple(range(len(configs))),
    train_chunk=lambda *args: train_chunk(*args, rules),
    evaluate=lambda state: evaluate_all(state, eval_data),
    epoch_plan=lambda epoch: plans(seeds, keep, epoch),
    put_history=lambda history: _replicate(history, mesh),
    stack=jax.jit(cohort.stack, out_shardings=replicated),
    split=jax.jit(lambda state: [cohort.member(state, k) for k in range(len(configs))]),
  )


def _replicate(tree, mesh: Mesh):
  """A host pytree every process holds, as arrays replicated over ``mesh``."""
  replicated = NamedSharding(mesh, PartitionSpec())
  return jax.tree.map(lambda x: input_pipeline.place(x, replicated), tree)


class Members(NamedTuple):
  """What a cohort sets up once: the data, the initial states and the programs."""

  configs: list
  workdirs: list
  datasets: list  # each member's input_pipeline.Dataset, as its run alone loads it
  steps_per_epoch: int
  num_epochs: int
  graphdef: Any
  initial_states: list
  groups: list  # the Programs that train the members, together covering each once
  train_data: input_pipeline.DeviceSplit  # the training pool, once

  @classmethod
  def create(cls, configs, workdirs, stacked: bool | None = None) -> Members:
    data = data_lib.load(configs)
    if len({(d.mean, d.std) for d in data.datasets}) > 1:
      raise ValueError(
        "config.seed: the members' training splits have other channel statistics (an image "
        "folder without CIFAR-10's classes and a validation_fraction): train them alone"
      )
    spe = data_lib.steps_per_epoch(configs[0], len(data.datasets[0].train))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    txs = [optimizer.create_optimizer(c, spe) for c in configs]
    num_classes = data.datasets[0].num_classes
    made = [steps_lib.create_train_state(c, num_classes, tx) for c, tx in zip(configs, txs)]
    graphdef, states = made[0][0], [_replicate(state, mesh) for _, state in made]
    if stacked is None:
      stacked = len(configs) > 1 and jax.default_backend() != "cpu"
    groups = _programs(configs, spe, graphdef, txs, states, data, mesh, stacked)
    if jax.process_index() == 0:
      _print_warnings(configs, workdirs)
    pool = input_pipeline.to_device(data.pool, mesh)
    return cls(
      list(configs), list(workdirs), data.datasets, spe, ga.num_epochs(configs[0].phases),
      graphdef, states, groups, pool,
    )  # fmt: skip

  def open_outputs(self, k: int, state, start_step: int) -> outputs.RunOutputs:
    """Member ``k``'s files (in a cohort of several, its run.json names the cohort)."""
    dataset = self.datasets[k]
    depth = outputs.network_depth(self.graphdef, state, dataset.train.images.shape[1:])
    info = outputs.run_info(self.configs[k], dataset, self.steps_per_epoch, state.params, depth)
    label = ""
    if len(self.workdirs) > 1:
      info["cohort"] = dict(size=len(self.workdirs), members=list(self.workdirs), index=k)
      label = f"[{_member_name(self.workdirs[k])}] "
    if start_step:
      outputs.check_same_data(self.workdirs[k], info)
    options = dict(start_step=start_step, write=jax.process_index() == 0, label=label)
    return outputs.RunOutputs(self.workdirs[k], self.configs[k], info, state, **options)

  def stack(self, states: list) -> list:
    """The members' states as the groups' states."""
    return [g.stack([states[k] for k in g.members]) for g in self.groups]

  def split(self, group_states: list) -> list:
    """The groups' states as the members' states (buffers of their own), in member order."""
    states = [None] * len(self.workdirs)
    for g, state in zip(self.groups, group_states):
      for k, member_state in zip(g.members, g.split(state)):
        states[k] = member_state
    return states

  def train_epoch(self, group_states, epoch: int, start: int, carried: list, stop):
    """Steps ``start ..`` of ``epoch``: the groups' states, each member's per-step metrics."""
    history = {
      n: np.zeros((len(self.workdirs), self.steps_per_epoch), np.float32)
      for n in steps_lib.STEP_METRICS
    }
    for k, metrics in enumerate(carried):
      for name, values in (metrics or {}).items():
        history[name][k, : len(values)] = values
    histories = [
      g.put_history({n: v[list(g.members)] for n, v in history.items()}) for g in self.groups
    ]
    steps = dict(epoch=epoch, start=start, steps=self.steps_per_epoch, stop=stop)
    steps["chunk"] = steps_lib.steps_per_dispatch(self.configs[0])
    steps["batch_size"] = self.configs[0].batch_size * len(self.workdirs)
    group_states, histories, done = train_epoch(
      self.groups, group_states, self.train_data, histories, **steps
    )
    metrics = [None] * len(self.workdirs)
    for g, group_history in zip(self.groups, jax.device_get(histories)):
      for i, k in enumerate(g.members):
        metrics[k] = {
          n: np.reshape(v, (len(g.members), -1))[i, :done] for n, v in group_history.items()
        }
    return group_states, metrics

  def epoch_rows(self, epoch, group_states, states, metrics, start: int, started: float) -> list:
    """Every member's ``metrics.jsonl`` row of a finished epoch (steps ``start ..`` timed)."""
    train_seconds, spe = time.perf_counter() - started, self.steps_per_epoch
    lr = float(ga.learning_rate_schedule(self.configs[0].phases, spe)((epoch - 1) * spe))
    rows = [None] * len(self.workdirs)
    for g, state in zip(self.groups, group_states):
      sums = jax.device_get(g.evaluate(state))
      for i, k in enumerate(g.members):
        mean = {n: float(np.mean(v)) for n, v in metrics[k].items()}
        row = dict(epoch=epoch, step=epoch * spe, lr=lr, train_loss=mean["loss"])
        row.update(train_accuracy=mean["accuracy"], grad_norm=mean["grad_norm"])
        for name, split_sums in sums.items():
          s = {key: np.reshape(v, -1)[i] for key, v in split_sums.items()}  # scalars alone
          row[f"{name}_loss"] = float(s["loss"]) / float(s["count"])
          row[f"{name}_accuracy"] = float(s["correct"]) / float(s["count"])
        row["amplified_layers"] = outputs.amplified_layers(self.configs[k], states[k].opt_state)
        row["epoch_seconds"] = time.perf_counter() - started
        images = (len(metrics[k]["loss"]) - start) * self.configs[k].batch_size
        row["images_per_second"] = images / train_seconds
        rows[k] = row
    return rows


def _programs(configs, spe, graphdef, txs, states, data, mesh, stacked: bool) -> list:
  """The :class:`Programs` that train the members: one stacked, or one per member."""
  mean, std = data.datasets[0].mean, data.datasets[0].std
  batch = configs[0].eval_batch_size
  test = input_pipeline.to_device_batches(data.datasets[0].test, batch, mesh)
  vals = [
    input_pipeline.to_device_batches(d.validation, batch, mesh)
    for d in data.datasets
    if d.validation is not None
  ]
  keep = [_replicate(k, mesh) for k in data.keep]
  if stacked:
    eval_data = dict(test=test, **({"val": cohort.stack(vals)} if vals else {}))
    return [_stacked_programs(configs, spe, graphdef, mean, std, jnp.stack(keep), eval_data, mesh)]
  jitted, groups = {}, []
  for k, config in enumerate(configs):
    key = cohort.config_key(config, ignore=("seed",))
    if key not in jitted:
      jitted[key] = _jit_run(config, spe, graphdef, txs[k], states[k], mean, std, mesh)
    eval_data = dict(test=test, **({"val": vals[k]} if vals else {}))
    groups.append(_run_programs(k, jitted[key], config.seed, keep[k], eval_data, mesh))
  return groups


def _advance(bar, steps: int, losses: list, start: int, begin: float, batch_size: int) -> None:
  """Waits for a chunk (its loss) and advances the progress ``bar`` by its ``steps``."""
  loss = float(np.mean([float(x) for x in losses]))
  rate = (bar.n + steps - start) * batch_size / (time.perf_counter() - begin)
  bar.set_postfix(loss=f"{loss:.3f}", img_s=f"{rate:.0f}", refresh=False)
  bar.update(steps)


def chunk_bounds(start: int, stop: int, size: int) -> list[tuple[int, int]]:
  """``[start, stop)`` cut into consecutive ranges of at most ``size`` steps."""
  return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def train_epoch(
  groups: list,
  states: list,
  data,
  histories: list,
  *,
  epoch: int,
  start: int,
  steps: int,
  chunk: int,
  batch_size: int,
  stop=None,
):
  """Runs steps ``start ..`` of an epoch for each of ``groups``, ``chunk`` steps a call; the
  host waits for the chunk before the one running, so ``stop()`` acts within two chunks.

  Returns:
    The new states, the histories and the number of steps of the epoch done.
  """
  from tqdm import tqdm

  states, histories = list(states), list(histories)
  plans = [g.epoch_plan(epoch) for g in groups]
  quiet = not sys.stderr.isatty()
  bar = tqdm(total=steps, initial=start, desc=f"epoch {epoch}", leave=False, disable=quiet)
  done, pending, timing = start, None, (start, time.perf_counter(), batch_size)
  with bar:
    for a, b in chunk_bounds(start, steps, chunk):
      losses = []
      for i, group in enumerate(groups):
        states[i], histories[i], loss = group.train_chunk(
          states[i], data, plans[i], a, b, histories[i]
        )
        losses.append(loss)
      if pending is not None:
        _advance(bar, *pending, *timing)  # waits for the previous chunk
      pending, done = (b - a, losses), b
      if stop is not None and done < steps and stop():
        break
    if pending is not None:
      _advance(bar, *pending, *timing)
  return states, histories, done
