"""Starting a run from another run's checkpoint: the primitive of branched sweeps.

:func:`fork` starts a run at the end of an epoch once replaying both selection rules on the
parent's recorded measures shows they agree up to there (docs/sweeps.md).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import gradamp_jax as ga
from gradamp_jax import run_folder
from gradamp_jax.training import checkpointing, config_fields, conv_choice, optimizer, outputs
from gradamp_jax.training import steps as steps_lib
from gradamp_jax.training.workdir_lock import WorkdirLock

# Fields of ``config.amplification`` that only decide what a selection does. Not ``where``:
# on several devices the two placements round differently from the first step.
RULE_FIELDS = ("method", "measure", "case", "threshold", "ratio", "action", "alpha", "lo", "hi")
_RULE_PATHS = tuple(f"amplification.{f}" for f in RULE_FIELDS)


def computation_fields(config: dict) -> dict:
  """A ``config.json`` dict, flat, less its selection rule and :data:`RESUMABLE_FIELDS`."""
  ignored = set(run_folder.RESUMABLE_FIELDS) | set(_RULE_PATHS)
  return {k: v for k, v in sorted(run_folder.flat_config(config).items()) if k not in ignored}


def replay_selections(
  config, params, rows: list[dict], steps_per_epoch: int, until_epoch: int
) -> list:
  """The selections ``config``'s own rule makes from recorded statistics.

  Runs the config's transform with zero gradients on the measures ``rows`` recorded for
  epochs ``1 .. until_epoch``, so the rule and random draws are the run's own.

  Returns:
    The :class:`~gradamp_jax.AmplificationState` right after each selection, in order.

  Raises:
    ValueError: an epoch's statistics are not recorded for every layer.
  """
  tx = optimizer.create_amplification(config, steps_per_epoch)
  if tx is None or until_epoch < 1:
    return []
  names = ga.layer_index(params).names
  by_epoch: dict[int, dict] = {}
  for row in rows:
    by_epoch.setdefault(row["epoch"], {})[row["layer"]] = row
  update, zeros = jax.jit(tx.update), jax.tree.map(jnp.zeros_like, params)
  state, selections = tx.init(params), []
  for epoch in range(1, until_epoch + 1):
    values = _recorded(by_epoch.get(epoch, {}), names, state.directionality.measures, epoch)
    count = jnp.asarray(epoch * steps_per_epoch, jnp.int32)
    stats = state.directionality.replace(count=count, epoch=jnp.int32(epoch), values=values)
    before = state._replace(count=count, directionality=stats)
    _, after = update(zeros, before)
    if int(after.num_selections) > int(before.num_selections):
      selections.append(after)
      state = after
  return selections


def _recorded(recorded: dict, names: list, measures, epoch: int) -> dict:
  """Each of ``measures`` of the layers ``names`` in one epoch's rows (None read as NaN)."""
  missing = [n for n in names if n not in recorded]
  if missing:
    raise ValueError(
      f"directionality of epoch {epoch} is not recorded for layer(s) "
      f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}"
    )
  unrecorded = [m for m in measures if m not in recorded[names[0]]]
  if unrecorded:
    raise ValueError(
      f"directionality of epoch {epoch} does not record measure(s) {', '.join(unrecorded)}"
    )
  values = {m: np.array([recorded[n][m] for n in names], float) for m in measures}  # None: NaN
  return {m: jnp.asarray(v, jnp.float32) for m, v in values.items()}


def selection_key(selection, where: str) -> tuple:
  """What makes later training differ: when a selection takes effect, its scales and where."""
  scale = np.asarray(selection.scale, np.float32)
  return (int(selection.selection_step), scale.tobytes(), where if (scale != 1).any() else None)


def fork(config: ml_collections.ConfigDict, workdir: str, parent: str, epoch: int) -> bool:
  """Starts ``workdir``'s run (of ``config``) from ``parent``'s state at the end of ``epoch``.

  ``parent`` must have finished ``epoch`` (1-based) and kept its checkpoint.

  Returns:
    True if the fork was made, False if ``workdir`` already held a checkpoint at or past
    the end of ``epoch``.

  Raises:
    ValueError: naming the fields beyond the selection rule the configs differ in, the epoch
      their selections differ at, or what the parent lacks.
  """
  epoch = int(epoch)
  config_fields.validate_config(config)
  config = conv_choice.resolve(config, workdir, parent)
  outputs.check_same_experiment(config, workdir)
  where = f"fork of {workdir!r} from {parent!r} at epoch {epoch}"
  parent_config, info = _check_parent(where, config, parent, epoch)
  steps_per_epoch = info["steps_per_epoch"]
  step = epoch * steps_per_epoch
  if run_folder.newest_step(workdir) >= step:
    return False
  metrics = run_folder.read_rows(parent, run_folder.METRICS, until_epoch=epoch)
  if [r["epoch"] for r in metrics] != list(range(1, epoch + 1)):
    raise ValueError(f"{where}: the parent has not finished epoch {epoch}")
  tx = optimizer.create_optimizer(config, steps_per_epoch)
  _, template = steps_lib.create_train_state(config, info["num_classes"], tx)
  directions = run_folder.read_rows(parent, run_folder.DIRECTIONALITY, until_epoch=epoch)
  mine = _same_selections(where, config, parent_config, template, directions, info, epoch)
  state = _restore_parent(where, parent, step, template, steps_per_epoch)
  if mine:
    state = _with_own_selection(where, state, mine[-1])
  outputs.check_workdir(workdir)
  with WorkdirLock(workdir):
    # Files first, the checkpoint last: a fork cut short is made again.
    rows = dict(metrics=metrics, directionality=directions)
    rows["layer_stats"] = _selection_rows(config, mine, template.params, info)
    outputs.write_fork(workdir, config, parent, epoch, step, **rows)
    with checkpointing.RunCheckpoints(
      workdir, keep=config.keep_checkpoints, steps_per_epoch=steps_per_epoch
    ) as checkpoints:
      checkpoints.save(step, state)
  return True


def _check_parent(where: str, config, parent: str, epoch: int) -> tuple[dict, dict]:
  """The parent's ``config.json`` and ``run.json``, once ``config`` may fork from it there."""
  try:
    parent_config = run_folder.read_json(parent, run_folder.CONFIG)
    info = run_folder.read_json(parent, run_folder.RUN_INFO)
  except (OSError, ValueError) as e:
    raise ValueError(f"{where}: the parent is not a run folder ({e})") from None
  child_config = json.loads(config.to_json_best_effort())
  if not (child_config["track_directionality"] and parent_config.get("track_directionality")):
    raise ValueError(
      f"{where}: track_directionality must be true in both runs (their "
      "optimizer states then have one layout)"
    )
  changed = run_folder.differing_fields(parent_config, child_config, _RULE_PATHS)
  if changed:
    raise ValueError(
      f"{where}: the configs differ in {', '.join(changed)}; only the "
      f"selection rule (amplification.{', '.join(RULE_FIELDS)}) may"
    )
  num_epochs = ga.num_epochs(config.phases)
  if not 1 <= epoch <= num_epochs:
    raise ValueError(f"{where}: fork_epoch must be in 1..{num_epochs}")
  return parent_config, info


def _same_selections(where, config, parent_config, template, directions, info, epoch) -> list:
  """This run's selections before the fork, once checked against the parent's."""
  steps_per_epoch = info["steps_per_epoch"]
  replay = lambda c: replay_selections(c, template.params, directions, steps_per_epoch, epoch - 1)
  try:
    mine, theirs = replay(config), replay(ml_collections.ConfigDict(parent_config))
  except ValueError as e:
    raise ValueError(f"{where}: {e}") from None
  wheres = config.amplification.where, parent_config["amplification"]["where"]
  for a, b in zip(mine, theirs):
    if selection_key(a, wheres[0]) != selection_key(b, wheres[1]):
      raise ValueError(
        f"{where}: the runs' selections differ at epoch {int(a.selection_epoch) + 1} (this run "
        f"acts on {int(np.sum(np.asarray(a.scale) != 1))} layers, the parent on "
        f"{int(np.sum(np.asarray(b.scale) != 1))}); they are not the same computation"
      )
  return mine


def _restore_parent(where: str, parent: str, step: int, template, steps_per_epoch: int):
  """The parent's state at update ``step``, restored into ``template``'s layout."""
  with checkpointing.RunCheckpoints(
    parent, keep=None, steps_per_epoch=steps_per_epoch, read_only=True
  ) as checkpoints:
    kept = checkpoints.steps()
    if step not in kept:
      raise ValueError(
        f"{where}: the parent kept no checkpoint at update {step} (end of epoch "
        f"{step // steps_per_epoch}); it has {kept}"
      )
    try:
      return checkpoints.restore_at(step, template)
    except Exception as e:  # orbax raises many types for a state of another layout
      raise ValueError(
        f"{where}: the parent's checkpoint does not fit this run's state "
        f"({type(e).__name__}: {str(e).splitlines()[0][:200]})"
      ) from None


def _with_own_selection(where: str, state, own):
  """The parent's ``state`` with this run's record (measure, z-scores) of the selection ``own``."""
  restored = ga.find_state(state.opt_state)
  if not (np.array_equal(restored.mask, own.mask) and np.array_equal(restored.key, own.key)):
    raise ValueError(
      f"{where}: replaying the parent's statistics does not reproduce its "
      "selection; its directionality.jsonl does not belong to its checkpoint"
    )
  amp = restored._replace(
    measure_mask=own.measure_mask, measure=own.measure, normalized=own.normalized, scale=own.scale
  )
  is_amp = lambda x: isinstance(x, ga.AmplificationState)
  opt_state = jax.tree.map(lambda x: amp if is_amp(x) else x, state.opt_state, is_leaf=is_amp)
  return state._replace(opt_state=opt_state)


def _selection_rows(config, selections: list, params, info: dict) -> list[dict]:
  """The ``layer_stats.jsonl`` rows of ``selections``, in network order."""
  if config.amplification.method == "none":
    return []
  depth = {layer["layer"]: layer["index"] for layer in info["layers"]}
  return [
    row
    for s in selections
    for row in outputs.in_network_order(outputs.layer_stat_rows(config, s, params), depth)
  ]
