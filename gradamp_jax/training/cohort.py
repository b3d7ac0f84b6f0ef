"""Cohorts: K runs that differ only in data (:data:`COHORT_FIELDS`) trained as one program.

A cohort stacks its members' states along a leading axis and ``vmap``-s the training chunk
over them: one compiled program, one launch per kernel for K runs, the training images
once on the device. Each member keeps what makes it a run of its own:

* its init, shuffle, crops, flips and random selections (its ``seed``: the initial state
  and the epoch plans are the member's own, computed as a run alone computes them);
* its validation hold-out (the training pool is on the device once; each member's epoch
  plan indexes its own training examples in it);
* its selection rule's numbers (:data:`TRACED_FIELDS`), traced, one per member;
* its run folder, with every file a run writes (metrics, layer statistics,
  directionality, ``config.json``, ``run.json`` naming the cohort, its own checkpoints):
  a member resumes, reports and forks like any run, alone or in a cohort.

A member's numbers equal its run alone up to the rounding of the batched convolutions
(docs/training.md, "Cohorts", says how close they were measured). A member whose loss
goes non-finite is reported by name, stops writing (its last good checkpoint is kept) and
the others go on; the cohort then ends with :class:`~gradamp_jax.training.train.NonFiniteError`
naming it. Resuming restores every member at the newest update all of them have a
checkpoint of.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import itertools
import json
import os
import sys
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

import gradamp_jax as ga
from gradamp_jax import input_pipeline, run_folder
from gradamp_jax.training import (
  checkpointing,
  config_fields,
  conv_choice,
  optimizer,
  outputs,
  preemption,
)
from gradamp_jax.training import steps as steps_lib
from gradamp_jax.training import train as train_lib

# The config fields a cohort's members may differ in; every other field is shared.
COHORT_FIELDS = (
  "seed",
  "amplification.threshold",
  "amplification.alpha",
  "amplification.lo",
  "amplification.hi",
)
# The amplification fields passed to the optimizer traced (one value per member).
TRACED_FIELDS = ("threshold", "alpha", "lo", "hi")


def check_cohort(configs, workdirs) -> None:
  """Refuses, in one line naming the field, configs that cannot train as one cohort."""
  if not configs or len(configs) != len(workdirs):
    raise ValueError(
      f"a cohort needs one workdir per config, got {len(configs)} configs and "
      f"{len(workdirs)} workdirs"
    )
  if len(set(workdirs)) != len(workdirs):
    raise ValueError(f"workdirs: each cohort member needs its own, got {list(workdirs)}")
  if jax.process_count() > 1:
    raise ValueError("a cohort trains in one process; run without --distributed")
  first = json.loads(configs[0].to_json_best_effort())
  for k, config in enumerate(configs[1:], 1):
    other = json.loads(config.to_json_best_effort())
    differing = run_folder.differing_fields(first, other, ignore=COHORT_FIELDS)
    if differing:
      field = differing[0]
      a, b = (run_folder.flat_config(c).get(field) for c in (first, other))
      raise ValueError(
        f"config.{field}: cohort members must share it (member 0: {a!r}, member {k}: "
        f"{b!r}); a cohort's runs may differ only in {', '.join(COHORT_FIELDS)}"
      )


def groups(configs, size: int) -> list[list[int]]:
  """The positions of ``configs`` grouped into cohorts of at most ``size``: configs equal
  but in :data:`COHORT_FIELDS` share one, in order of first appearance.

  >>> from configs import quickstart
  >>> a, b, c = (quickstart.get_config() for _ in range(3))
  >>> b.seed, c.model = 1, "vgg11"
  >>> groups([a, b, c, a], 3)
  [[0, 1, 3], [2]]
  """
  if size < 1:
    raise ValueError(f"--cohort: must be a positive number of runs, got {size}")
  shared: dict[str, list[int]] = {}
  for k, config in enumerate(configs):
    flat = run_folder.flat_config(json.loads(config.to_json_best_effort()))
    key = json.dumps({f: v for f, v in flat.items() if f not in COHORT_FIELDS}, sort_keys=True)
    shared.setdefault(key, []).append(k)
  return [ks[i : i + size] for ks in shared.values() for i in range(0, len(ks), size)]


def members_of(config, workdir: str, cohort_flags: list[str]) -> tuple[list, list[str]]:
  """The members of ``--cohort FIELD=V1,V2,...`` flags: one config for each combination
  of the fields' values (their product, in order), each in ``workdir/FIELD=V-...``.

  >>> from configs import quickstart
  >>> configs, workdirs = members_of(quickstart.get_config(), "runs/c", ["seed=0,1"])
  >>> [c.seed for c in configs], workdirs
  ([0, 1], ['runs/c/seed=0', 'runs/c/seed=1'])

  Raises:
    ValueError: naming the flag, for a field outside :data:`COHORT_FIELDS` or a value
      the field does not take.
  """
  axes = []
  for flag in cohort_flags:
    field, sep, values = flag.partition("=")
    if not sep or not values:
      raise ValueError(f"--cohort {flag!r}: expected FIELD=V1,V2,...")
    if field not in COHORT_FIELDS:
      raise ValueError(
        f"--cohort {field}: a cohort's runs may differ only in {', '.join(COHORT_FIELDS)}"
      )
    axes.append([(field, v.strip()) for v in values.split(",")])
  configs, workdirs = [], []
  for combination in itertools.product(*axes):
    member_config = copy.deepcopy(config)
    config_fields.apply_overrides(member_config, [f"{f}={v}" for f, v in combination])
    config_fields.check_fields(member_config)
    configs.append(member_config)
    workdirs.append(os.path.join(workdir, "-".join(f"{f}={v}" for f, v in combination)))
  return configs, workdirs


def member_rules(configs) -> dict[str, np.ndarray]:
  """The traced rule fields the members' method and action read, float32 ``(K,)`` each."""
  amp = configs[0].amplification
  names = ["threshold"] if amp.method in ga.amplification.MEASURED_METHODS else []
  names += [n for n in ga.actions.ACTIONS[amp.action].params if n in TRACED_FIELDS]
  return {n: np.asarray([c.amplification[n] for c in configs], np.float32) for n in names}


# The update counters of a state: equal in every member (they train in step), so a cohort
# keeps one of each. Shared, they stay unbatched under vmap, and so do the conditions derived
# from them: the epoch-end measures stay a conditional, not both branches and a select.
SHARED_LEAVES = ("step", "count", "epoch")


def _shared(path) -> bool:
  last = path[-1] if path else None
  return getattr(last, "name", getattr(last, "key", None)) in SHARED_LEAVES


def stack(trees):
  """Member states stacked along a new leading axis; the update counters
  (:data:`SHARED_LEAVES`) once."""
  return jax.tree_util.tree_map_with_path(
    lambda path, *xs: xs[0] if _shared(path) else jnp.stack(xs), *trees
  )


def member(tree, k: int):
  """Member ``k`` of a stacked state."""
  return jax.tree_util.tree_map_with_path(lambda path, x: x if _shared(path) else x[k], tree)


def member_axes(tree):
  """``vmap``'s axes of a stacked state: None for the shared counters."""
  return jax.tree_util.tree_map_with_path(lambda path, x: None if _shared(path) else 0, tree)


class CohortPrograms(NamedTuple):
  """A cohort's jitted functions: ``train_chunk`` takes and returns stacked states (its
  loss is the members' mean), ``evaluate`` takes a stacked state and an evaluation split
  (shared, or stacked with ``stacked=True``), ``epoch_plan(epoch)`` the members' plans."""

  train_chunk: Callable
  evaluate: Callable
  epoch_plan: Callable
  split: Callable  # a stacked state -> the members' states (one program for every leaf)
  steps_per_call: int


def make_cohort_chunk(config, spe, graphdef, mean, std, batch_sharding=None, *, loop: bool):
  """Returns ``train_chunk(state, data, plan, start, stop, history, rules) -> (state,
  history, loss)``: :func:`~gradamp_jax.training.steps.make_train_chunk` ``vmap``-ped over
  the members (stacked ``state``, ``plan``, ``history`` and ``rules``, :func:`member_rules`;
  ``data`` shared), ``loss`` the members' mean of their chunk's last step."""

  def member_chunk(state, data, plan, rule, start, stop, history):
    tx = optimizer.create_optimizer(config, spe, rule=rule)
    chunk = steps_lib.make_train_chunk(graphdef, tx, mean, std, batch_sharding, loop=loop)
    return chunk(state, data, plan, start, stop, history)

  def train_chunk(state, data, plan, start, stop, history, rules):
    axes = member_axes(state)
    batched = jax.vmap(
      member_chunk, in_axes=(axes, None, 0, 0, None, None, 0), out_axes=(axes, 0, 0)
    )
    state, history, loss = batched(state, data, plan, rules, start, stop, history)
    return state, history, jnp.mean(loss)

  return train_chunk


def compile_cohort(configs, spe, graphdef, mean, std, keep, mesh: Mesh) -> CohortPrograms:
  """The jitted functions of a cohort over ``mesh`` (1-D, axis ``data``): each member's
  batch is split over the devices as a run's is, the states are replicated."""
  config = configs[0]
  per_call = steps_lib.steps_per_call(config)
  rules = member_rules(configs)
  batch_sharding = NamedSharding(mesh, PartitionSpec("data"))
  train_chunk = make_cohort_chunk(
    config, spe, graphdef, mean, std, batch_sharding, loop=per_call > 1
  )

  evaluate = steps_lib.make_evaluate(graphdef, mean, std, batch_sharding)
  seeds = np.asarray([c.seed for c in configs], np.int32)
  plan = functools.partial(
    input_pipeline.epoch_plan, num_examples=keep.shape[1], batch_size=config.batch_size
  )

  def epoch_plan(seeds, keep, epoch):
    plans = jax.vmap(plan, in_axes=(0, None))(seeds, epoch)
    return plans._replace(order=jax.vmap(lambda k, o: k[o])(keep, plans.order))

  # The members' numbers are arguments, not constants: one compiled program (and one entry
  # of the persistent compilation cache) serves every cohort of K members of this config.
  chunk = jax.jit(train_chunk, donate_argnums=steps_lib.chunk_donation(per_call > 1))
  plans = jax.jit(epoch_plan)
  return CohortPrograms(
    train_chunk=lambda *args: chunk(*args, rules),
    evaluate=jax.jit(
      lambda state, split, stacked: jax.vmap(
        evaluate, in_axes=(member_axes(state), 0 if stacked else None)
      )(state, split),
      static_argnums=2,
    ),
    epoch_plan=lambda epoch: plans(seeds, keep, epoch),
    split=jax.jit(lambda state: [member(state, k) for k in range(len(configs))]),
    steps_per_call=per_call,
  )


MEMORY_MARGIN = 0.8  # of a device's memory a cohort may plan for (XLA's reserve, cuDNN's)


def planned_bytes(memory) -> int:
  """The device memory a compiled program plans (its ``memory_analysis()``): arguments,
  outputs and temporaries."""
  return memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes


def largest_fitting(planned: dict[int, int], capacity: float, margin: float = MEMORY_MARGIN):
  """The largest cohort size that fits in ``margin`` of ``capacity`` bytes, on the line
  through the planned memory of the two largest cohort sizes of ``planned`` (``{K:
  bytes}``); returns it (None if the memory does not grow with K), the bytes a member adds
  and the bytes shared.

  >>> largest_fitting({1: 900, 2: 1600}, capacity=10_000)  # (8000 - 200) // 700
  (11, 700.0, 200.0)
  """
  (a, bytes_a), (b, bytes_b) = sorted(planned.items())[-2:]
  per_member = (bytes_b - bytes_a) / (b - a)
  shared = bytes_b - per_member * b
  largest = int((margin * capacity - shared) // per_member) if per_member > 0 else None
  return largest, per_member, shared


def planned_cohort_bytes(config, dataset, members: int, device=None) -> int:
  """The memory XLA plans for the training chunk of a cohort of ``members`` runs of
  ``config`` on ``device`` (default: the first), lowered with inputs of ``dataset``'s shapes
  (the training pool on the device included); nothing but one initial state is placed."""
  device = device or jax.devices()[0]
  sharding = jax.sharding.SingleDeviceSharding(device)
  spe = train_lib.steps_per_epoch(config, len(dataset.train))
  per_call = steps_lib.steps_per_call(config)
  graphdef, state = steps_lib.create_train_state(
    config, dataset.num_classes, optimizer.create_optimizer(config, spe)
  )
  chunk = make_cohort_chunk(config, spe, graphdef, dataset.mean, dataset.std, loop=per_call > 1)
  pool = len(dataset.train) + (len(dataset.validation) if dataset.validation else 0)
  plan = functools.partial(
    input_pipeline.epoch_plan, num_examples=len(dataset.train), batch_size=config.batch_size
  )
  stacked, plans = jax.eval_shape(
    lambda: (stack([state] * members), jax.vmap(plan, in_axes=(0, None))(jnp.arange(members), 1))
  )
  data = input_pipeline.DeviceSplit(
    jax.ShapeDtypeStruct((pool, *dataset.train.images.shape[1:]), jnp.uint8),
    jax.ShapeDtypeStruct((pool,), jnp.int32),
  )
  history = {k: jax.ShapeDtypeStruct((members, spe), jnp.float32) for k in steps_lib.STEP_METRICS}
  args = (stacked, data, plans, 0, per_call, history, member_rules([config] * members))

  def spec(x):
    dtype = getattr(x, "dtype", None) or jnp.result_type(x)
    return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

  args = jax.tree.map(spec, args)
  donate = steps_lib.chunk_donation(per_call > 1)
  compiled = jax.jit(chunk, donate_argnums=donate).lower(*args).compile()
  return planned_bytes(compiled.memory_analysis())


def auto_size(config, capacity: float, margin: float = MEMORY_MARGIN) -> tuple[int, str]:
  """``--cohort auto``: the largest cohort of runs of ``config`` whose training chunk fits
  in ``margin`` of ``capacity`` bytes (from XLA's planned memory of cohorts of 1 and 2 on
  this machine's first device), and one line saying why."""
  dataset = train_lib.load_dataset(config)
  planned = {k: planned_cohort_bytes(config, dataset, k) for k in (1, 2)}
  largest, per_member, shared = largest_fitting(planned, capacity, margin)
  size = max(largest or 1, 1)
  return size, (
    f"--cohort auto: K = {size} for {config.model} on {config.dataset}, batch "
    f"{config.batch_size}: a member plans {per_member / 2**20:,.0f} MiB and the cohort "
    f"{shared / 2**20:,.0f} MiB besides (XLA's plan for K = 1 and 2 on "
    f"{jax.devices()[0].device_kind}), within {margin:.0%} of {capacity / 2**30:,.1f} GiB"
  )


class Cohort(NamedTuple):
  """What a cohort sets up once: the members' data, states and the programs."""

  configs: list
  workdirs: list
  datasets: list  # each member's input_pipeline.Dataset, as its run alone loads it
  steps_per_epoch: int
  num_epochs: int
  graphdef: Any
  initial_states: list  # each member's, unstacked
  programs: CohortPrograms
  train_data: input_pipeline.DeviceSplit  # the training pool, once
  keep: jax.Array  # (K, num_train) positions of each member's training examples in the pool
  eval_data: dict  # name -> (EvalSplit, stacked)

  @classmethod
  def create(cls, configs, workdirs) -> Cohort:
    config = configs[0]
    pool, datasets, keep = input_pipeline.load_for_seeds(
      [c.seed for c in configs], config.dataset, **train_lib.data_args(config)
    )
    if len({(d.mean, d.std) for d in datasets}) > 1:
      raise ValueError(
        "config.seed: the members' training splits have other channel statistics (an image "
        "folder without CIFAR-10's classes and a validation_fraction): train them alone"
      )
    spe = train_lib.steps_per_epoch(config, len(datasets[0].train))
    mesh = Mesh(np.array(jax.devices()), ("data",))
    replicated = NamedSharding(mesh, PartitionSpec())
    states = []
    for c in configs:
      graphdef, state = steps_lib.create_train_state(
        c, datasets[0].num_classes, optimizer.create_optimizer(c, spe)
      )
      states.append(jax.device_put(state, replicated))
    mean, std = datasets[0].mean, datasets[0].std
    keep = jax.device_put(np.stack(keep), replicated)
    programs = compile_cohort(configs, spe, graphdef, mean, std, keep, mesh)
    train_lib.warn_if_looping_on_cpu(programs.steps_per_call)
    for warning in optimizer.config_warnings(config):
      print(warning, file=sys.stderr, flush=True)
    batch = config.eval_batch_size
    eval_data = {"test": (input_pipeline.to_device_batches(datasets[0].test, batch, mesh), False)}
    if datasets[0].validation is not None:
      splits = [input_pipeline.to_device_batches(d.validation, batch, mesh) for d in datasets]
      eval_data["val"] = (stack(splits), True)
    return cls(
      list(configs),
      list(workdirs),
      datasets,
      spe,
      ga.num_epochs(config.phases),
      graphdef,
      states,
      programs,
      input_pipeline.to_device(pool, mesh),
      keep,
      eval_data,
    )

  def open_outputs(self, k: int, state, start_step: int) -> outputs.RunOutputs:
    """Member ``k``'s files (its run.json names the cohort)."""
    dataset = self.datasets[k]
    depth = outputs.network_depth(self.graphdef, state, dataset.train.images.shape[1:])
    info = outputs.run_info(self.configs[k], dataset, self.steps_per_epoch, state.params, depth)
    info["cohort"] = dict(size=len(self.workdirs), members=list(self.workdirs), index=k)
    if start_step:
      outputs.check_same_data(self.workdirs[k], info)
    return outputs.RunOutputs(
      self.workdirs[k], self.configs[k], info, state, start_step=start_step, write=True
    )

  def train_epoch(self, state, epoch: int, start: int, carried: list, stop):
    """Steps ``start ..`` of ``epoch`` for every member; returns the stacked state and each
    member's per-step metrics of the epoch's steps done."""
    history = {
      k: np.zeros((len(self.configs), self.steps_per_epoch), np.float32)
      for k in steps_lib.STEP_METRICS
    }
    for k, metrics in enumerate(carried):
      for name, values in (metrics or {}).items():
        history[name][k, : len(values)] = values
    state, history, done = train_lib.train_epoch(
      self.programs.train_chunk,
      state,
      self.train_data,
      self.programs.epoch_plan(epoch),
      jax.device_put(history),
      epoch=epoch,
      start=start,
      steps=self.steps_per_epoch,
      chunk=self.programs.steps_per_call,
      batch_size=self.configs[0].batch_size * len(self.configs),
      stop=stop,
    )
    history = jax.device_get(history)
    return state, [{n: v[k, :done] for n, v in history.items()} for k in range(len(self.configs))]

  def epoch_rows(self, epoch, state, members, metrics, start: int, started: float) -> list:
    """Every member's ``metrics.jsonl`` row of a finished epoch (``state`` stacked,
    ``members`` the members' states)."""
    train_seconds = time.perf_counter() - started
    sums = {
      name: jax.device_get(self.programs.evaluate(state, split, stacked))
      for name, (split, stacked) in self.eval_data.items()
    }
    return [
      train_lib.epoch_row(
        c,
        self.steps_per_epoch,
        epoch,
        metrics[k],
        {name: {key: v[k] for key, v in s.items()} for name, s in sums.items()},
        members[k].opt_state,
        start=start,
        started=started,
        train_seconds=train_seconds,
      )
      for k, c in enumerate(self.configs)
    ]


def train_cohort(configs, workdirs, *, until_epoch: int | None = None) -> list[dict]:
  """Trains ``configs`` (one per workdir) as one cohort; what
  :func:`~gradamp_jax.training.train.train_and_evaluate` is for one run.

  Members already finished are left out (their last rows are returned as they are).

  Returns:
    Each member's last metrics row.

  Raises:
    ValueError: for a bad config or configs that differ in a field outside
      :data:`COHORT_FIELDS` (named).
    NonFiniteError: after the others finished, naming the members whose loss or
      gradients stopped being finite.
  """
  for config in configs:
    config_fields.validate_config(config)
  configs = [conv_choice.resolve(c, w) for c, w in zip(configs, workdirs)]
  check_cohort(configs, workdirs)
  with contextlib.ExitStack() as stack_:
    for config, workdir in zip(configs, workdirs):
      stack_.enter_context(train_lib.workdir_lock(workdir))
      outputs.check_same_experiment(config, workdir)
    done = [train_lib.already_done(c, w, until_epoch) for c, w in zip(configs, workdirs)]
    todo = [k for k, row in enumerate(done) if row is None]
    if todo:
      rows = _train(
        Cohort.create([configs[k] for k in todo], [workdirs[k] for k in todo]), until_epoch
      )
      for k, row in zip(todo, rows):
        done[k] = row
        outputs.print_summary(workdirs[k], ga.num_epochs(configs[k].phases))
  return done


def _restore(cohort: Cohort, checkpoints: list) -> tuple[int, Any, list]:
  """The stacked state at the newest update every member has a checkpoint of that
  restores, and each member's per-step metrics of that epoch's earlier steps."""
  restored = [c.restore(s) for c, s in zip(checkpoints, cohort.initial_states)]
  newest = min(step for step, _, _ in restored)
  kept = set.intersection(*(set(c.steps()) for c in checkpoints)) | {0}
  common = max(s for s in kept if s <= newest)
  states, carried = [], []
  for k, (step, state, metrics) in enumerate(restored):
    if step != common:
      state = cohort.initial_states[k] if common == 0 else checkpoints[k].restore_at(common, state)
      metrics = None
      if common % cohort.steps_per_epoch:
        checkpoints[k].partial.check(common, state)
        metrics = checkpoints[k].partial.metrics
    states.append(state)
    carried.append(metrics)
  replicated = NamedSharding(cohort.train_data.images.sharding.mesh, PartitionSpec())
  return common, jax.jit(stack, out_shardings=replicated)(states), carried


def _train(cohort: Cohort, until_epoch: int | None) -> list[dict]:
  spe, workdirs = cohort.steps_per_epoch, cohort.workdirs
  last_epoch = (
    cohort.num_epochs if until_epoch is None else min(int(until_epoch), cohort.num_epochs)
  )
  print(f"cohort of {len(workdirs)} runs: {', '.join(workdirs)}", flush=True)
  with contextlib.ExitStack() as exits:
    checkpoints = [
      exits.enter_context(
        checkpointing.RunCheckpoints(w, keep=c.keep_checkpoints, steps_per_epoch=spe)
      )
      for c, w in zip(cohort.configs, workdirs)
    ]
    start_step, state, carried = _restore(cohort, checkpoints)
    if start_step:
      print(f"Resumed every member from its checkpoint at update {start_step}", flush=True)
    members = cohort.programs.split(state)
    records = [cohort.open_outputs(k, members[k], start_step) for k in range(len(workdirs))]
    exits.callback(lambda: [r.close() for r in records])
    return _epochs(cohort, state, carried, start_step, last_epoch, checkpoints, records)


def _epochs(cohort, state, carried, start_step, last_epoch, checkpoints, records) -> list:
  """The epochs of :func:`_train`: train, check each member, record, checkpoint, stop."""
  spe, workdirs = cohort.steps_per_epoch, cohort.workdirs
  failed: dict[int, str] = {}  # member -> why it stopped
  rows = [outputs.last_metrics(w) if start_step else None for w in workdirs]
  with preemption.StopRequest() as stop:
    first = start_step // spe + 1
    for epoch in range(first, last_epoch + 1):
      started = time.perf_counter()
      offset = max(start_step - (epoch - 1) * spe, 0)
      state, metrics = cohort.train_epoch(state, epoch, offset, carried, stop.requested)
      carried, members = [None] * len(workdirs), cohort.programs.split(state)
      _check_members(cohort, state, epoch, checkpoints, failed)
      live = [k for k in range(len(workdirs)) if k not in failed]
      done = (epoch - 1) * spe + len(metrics[0]["loss"])
      if done < epoch * spe:  # a signal: checkpoint every member here and stop
        for k in live:
          records[k].record_selections(members[k])
          checkpoints[k].save_interrupted(done, members[k], metrics[k])
        raise preemption.Preempted(stop.signame, done, "each member's workdir")
      epoch_rows = cohort.epoch_rows(epoch, state, members, metrics, offset, started)
      for k in live:
        epoch_rows[k][run_folder.FIRST_AFTER_START] = epoch == first
        records[k].record_epoch(epoch_rows[k], members[k])
        checkpoints[k].save(done, members[k])
        rows[k] = epoch_rows[k]
      if epoch < last_epoch and stop.requested():
        for c in checkpoints:
          c.manager.wait_until_finished()
        raise preemption.Preempted(stop.signame, done, "each member's workdir")
  if failed:
    raise train_lib.NonFiniteError(
      "; ".join(f"cohort member {workdirs[k]}: {why}" for k, why in sorted(failed.items()))
    )
  return rows


def _check_members(cohort, state, epoch: int, checkpoints, failed: dict) -> None:
  """Adds the members whose loss or gradients stopped being finite to ``failed``, saying so."""
  for k, bad_step in enumerate(np.asarray(jax.device_get(state.bad_step))):
    if bad_step >= 0 and k not in failed:
      failed[k] = (
        f"non-finite loss or gradients at epoch {epoch}, step {int(bad_step)} (0-based "
        f"update count); {checkpoints[k].describe_kept()}"
      )
      print(
        f"error: cohort member {cohort.workdirs[k]}: {failed[k]}; the others go on",
        file=sys.stderr,
        flush=True,
      )
