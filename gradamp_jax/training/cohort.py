"""Cohorts: K runs that differ only in data (:data:`COHORT_FIELDS`) trained together.

:func:`~gradamp_jax.training.train.train_cohort` trains them; this module holds what is
particular to K > 1: which configs may form a cohort, the members' stacked states, the
training chunk ``vmap``-ped over them and the largest cohort a device's memory holds.

Each member keeps its seed, validation hold-out, rule numbers and run folder. On a CPU each
member equals its run alone bitwise; under ``vmap`` up to the rounding of the batched
convolutions (docs/training.md, "Cohorts").
"""

from __future__ import annotations

import copy
import functools
import itertools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

import gradamp_jax as ga
from gradamp_jax import input_pipeline, run_folder
from gradamp_jax.training import config_fields, optimizer
from gradamp_jax.training import data as data_lib
from gradamp_jax.training import steps as steps_lib

# The config fields a cohort's members may differ in, with the action's (:func:`cohort_fields`).
COHORT_FIELDS = (
  "seed",
  "amplification.threshold",
  "amplification.alpha",
  "amplification.lo",
  "amplification.hi",
)


def cohort_fields(config) -> tuple[str, ...]:
  """:data:`COHORT_FIELDS` and ``amplification.<name>`` of each of the action's parameters."""
  params = ga.actions.ACTIONS[config.amplification.action].params
  extra = [f"amplification.{n}" for n in params if f"amplification.{n}" not in COHORT_FIELDS]
  return (*COHORT_FIELDS, *extra)


def check_cohort(configs, workdirs) -> None:
  """Refuses, naming the field, configs that cannot train as one cohort."""
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
  fields = cohort_fields(configs[0])
  for k, config in enumerate(configs[1:], 1):
    other = json.loads(config.to_json_best_effort())
    differing = run_folder.differing_fields(first, other, ignore=fields)
    if differing:
      field = differing[0]
      a, b = (run_folder.flat_config(c).get(field) for c in (first, other))
      raise ValueError(
        f"config.{field}: cohort members must share it (member 0: {a!r}, member {k}: "
        f"{b!r}); a cohort's runs may differ only in {', '.join(fields)}"
      )


def groups(configs, size: int) -> list[list[int]]:
  """The positions of ``configs`` grouped into cohorts of at most ``size`` (configs equal but
  in :func:`cohort_fields`), in order of first appearance.

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
    shared.setdefault(config_key(config, ignore=cohort_fields(config)), []).append(k)
  return [ks[i : i + size] for ks in shared.values() for i in range(0, len(ks), size)]


def config_key(config, ignore=()) -> str:
  """A string equal for configs equal but in the fields ``ignore``."""
  flat = run_folder.flat_config(json.loads(config.to_json_best_effort()))
  return json.dumps({f: v for f, v in flat.items() if f not in ignore}, sort_keys=True)


def members_of(config, workdir: str, cohort_flags: list[str]) -> tuple[list, list[str]]:
  """One config per combination of ``--cohort FIELD=V1,V2,...`` flags' values, each in
  ``workdir/FIELD=V-...``.

  Raises ValueError naming the flag, for a field outside :func:`cohort_fields` or a bad value.

  >>> from configs import quickstart
  >>> configs, workdirs = members_of(quickstart.get_config(), "runs/c", ["seed=0,1"])
  >>> [c.seed for c in configs], workdirs
  ([0, 1], ['runs/c/seed=0', 'runs/c/seed=1'])
  """
  axes = []
  for flag in cohort_flags:
    field, sep, values = flag.partition("=")
    if not sep or not values:
      raise ValueError(
        f"--cohort {flag!r}: expected FIELD=V1,V2,... (a run per value, trained here as one "
        "cohort); --cohort auto and --cohort K group a sweep's runs into cohorts and are the "
        "sweep launcher's: launch/sweep.py --cohort auto (docs/sweeps.md#cohorts)"
      )
    if field not in cohort_fields(config):
      raise ValueError(
        f"--cohort {field}: a cohort's runs may differ only in {', '.join(cohort_fields(config))}"
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
  """The threshold and the action's parameters, float32 ``(K,)`` each (traced per member)."""
  amp = configs[0].amplification
  params = ga.actions.ACTIONS[amp.action].params
  names = ["threshold"] if amp.method in ga.amplification.MEASURED_METHODS else []

  def value(config, name):
    return config.amplification[name] if name in config.amplification else params[name].default

  return {n: np.asarray([value(c, n) for c in configs], np.float32) for n in [*names, *params]}


# The update counters (attributes, never dict entries): equal in every member, kept once and
# unbatched under vmap, so the conditions derived from them stay conditionals.
COUNTERS = ("step", "count", "epoch")


def _shared(path) -> bool:
  last = path[-1] if path else None
  return isinstance(last, jax.tree_util.GetAttrKey) and last.name in COUNTERS


def stack(trees):
  """Member states stacked along a new leading axis; the counters once."""
  return jax.tree_util.tree_map_with_path(
    lambda path, *xs: xs[0] if _shared(path) else jnp.stack(xs), *trees
  )


def member(tree, k: int):
  """Member ``k`` of a stacked state."""
  return jax.tree_util.tree_map_with_path(lambda path, x: x if _shared(path) else x[k], tree)


def member_axes(tree):
  """``vmap``'s axes of a stacked state: None for the shared counters."""
  return jax.tree_util.tree_map_with_path(lambda path, x: None if _shared(path) else 0, tree)


def make_cohort_chunk(config, spe, graphdef, mean, std, batch_sharding=None, *, loop: bool):
  """:func:`~gradamp_jax.training.steps.make_train_chunk` ``vmap``-ped over the members, their
  ``rules`` last (:func:`member_rules`); ``data`` shared, the loss the members' mean."""

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


MEMORY_MARGIN = 0.8  # of a device's memory a cohort may plan for (XLA's reserve, cuDNN's)


def planned_bytes(memory) -> int:
  """The device memory a compiled program's ``memory_analysis()`` plans."""
  return memory.argument_size_in_bytes + memory.output_size_in_bytes + memory.temp_size_in_bytes


def largest_fitting(planned: dict[int, int], capacity: float, margin: float = MEMORY_MARGIN):
  """The largest cohort size within ``margin`` of ``capacity`` bytes, on the line through the
  two largest sizes of ``planned`` (``{K: bytes}``) (None if it does not grow with K), the
  bytes a member adds and the bytes shared.

  >>> largest_fitting({1: 900, 2: 1600}, capacity=10_000)  # (8000 - 200) // 700
  (11, 700.0, 200.0)
  """
  (a, bytes_a), (b, bytes_b) = sorted(planned.items())[-2:]
  per_member = (bytes_b - bytes_a) / (b - a)
  shared = bytes_b - per_member * b
  largest = int((margin * capacity - shared) // per_member) if per_member > 0 else None
  return largest, per_member, shared


def planned_cohort_bytes(config, dataset, members: int) -> int:
  """The memory XLA plans for a cohort of ``members``' training chunk on the first device."""
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  spe = data_lib.steps_per_epoch(config, len(dataset.train))
  per_dispatch = steps_lib.steps_per_dispatch(config)
  graphdef, state = steps_lib.create_train_state(
    config, dataset.num_classes, optimizer.create_optimizer(config, spe)
  )
  chunk = make_cohort_chunk(config, spe, graphdef, dataset.mean, dataset.std, loop=per_dispatch > 1)
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
  args = (stacked, data, plans, 0, per_dispatch, history, member_rules([config] * members))

  def spec(x):
    dtype = getattr(x, "dtype", None) or jnp.result_type(x)
    return jax.ShapeDtypeStruct(np.shape(x), dtype, sharding=sharding)

  args = jax.tree.map(spec, args)
  donate = steps_lib.chunk_donation(per_dispatch > 1)
  compiled = jax.jit(chunk, donate_argnums=donate).lower(*args).compile()
  return planned_bytes(compiled.memory_analysis())


def auto_size(config, capacity: float) -> tuple[int, str]:
  """``--cohort auto``: the largest K within :data:`MEMORY_MARGIN` of ``capacity``, and why."""
  dataset = data_lib.load_dataset(config)
  planned = {k: planned_cohort_bytes(config, dataset, k) for k in (1, 2)}
  largest, per_member, shared = largest_fitting(planned, capacity)
  size = max(largest or 1, 1)
  return size, (
    f"--cohort auto: K = {size} for {config.model} on {config.dataset}, batch "
    f"{config.batch_size}: a member plans {per_member / 2**20:,.0f} MiB and the cohort "
    f"{shared / 2**20:,.0f} MiB besides (XLA's plan for K = 1 and 2 on "
    f"{jax.devices()[0].device_kind}), within {MEMORY_MARGIN:.0%} of {capacity / 2**30:,.1f} GiB"
  )
