"""Restoring the newest checkpoint that restores, and never starting over on results.

:func:`restore_newest` names each checkpoint that fails to restore, moves it to
``WORKDIR/bad_checkpoints/`` and tries the next older one; when none restores but the
workdir holds results, it refuses to start over.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gradamp_jax import jsonl, run_folder


class NoRestorableCheckpointError(ValueError):
  """Checkpoints exist, or results do, but no checkpoint restores."""


def restore_newest(
  manager: ocp.CheckpointManager,
  target: Any,
  workdir: str,
  *,
  step_of=lambda state: int(state.step),
  check=None,
) -> tuple[int, Any]:
  """``(step, state)`` of the newest checkpoint that restores into ``target``, whose
  ``step_of(state)`` is its index and that ``check(step, state)``, if given, does not refuse
  with ValueError; each that fails is set aside. ``(0, target)`` when there is none.

  Raises:
    NoRestorableCheckpointError: none restores, yet the workdir holds checkpoints or results.
  """
  failures = []
  for step in sorted(manager.all_steps(), reverse=True):
    try:
      state = restore_step(manager, step, target)
      if step_of(state) != step:
        raise ValueError(f"it holds update {step_of(state)}")
      if check is not None:
        check(step, state)
      return step, state
    except Exception as e:  # orbax and tensorstore raise many types for unreadable files
      reason = " ".join(f"{type(e).__name__}: {e}".split()).split(" See full TensorStore")[0]
      where = _set_aside(manager, step, workdir)
      print(
        f"warning: checkpoint {step} cannot be restored ({reason}); moved to {where}, "
        "trying an older one",
        file=sys.stderr,
        flush=True,
      )
      failures.append(f"{step} ({reason})")
  rows = run_folder.read_rows(workdir, run_folder.METRICS, missing_ok=True)
  epochs = max((r.get("epoch", 0) for r in rows), default=0)
  if failures or epochs > 1:
    what = f"it holds metrics of {epochs} epochs and no checkpoint"
    if failures:
      what = f"no checkpoint restores (tried {', '.join(failures)})"
    raise NoRestorableCheckpointError(
      f"workdir: {workdir!r}: {what}; refusing to start over on its results: move them "
      "away or use a new workdir"
    )
  return 0, target


def restore_step(manager: ocp.CheckpointManager, step: int, target):
  """Checkpoint ``step`` restored into ``target``'s layout; ValueError if it differs."""
  state = manager.restore(step, args=ocp.args.StandardRestore(target))
  if jax.tree.structure(state) != jax.tree.structure(target):
    raise ValueError("its tree structure differs from this run's state")
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(target)):
    if np.shape(a) != np.shape(b) or np.result_type(a) != np.result_type(b):
      got, want = (f"{np.result_type(x)}{list(np.shape(x))}" for x in (a, b))
      raise ValueError(f"{jax.tree_util.keystr(path)} is {got}, this run's is {want}")
  return state


def _set_aside(manager: ocp.CheckpointManager, step: int, workdir: str) -> str:
  """Moves checkpoint ``step`` to ``workdir/bad_checkpoints/STEP-TIME`` (lead only)."""
  stamp = time.strftime("%Y%m%d-%H%M%S")
  where = os.path.join(workdir, run_folder.BAD_CHECKPOINTS, f"{step}-{stamp}")
  if jax.process_index() == 0:
    os.makedirs(os.path.dirname(where), exist_ok=True)
    shutil.move(os.path.join(str(manager.directory), str(step)), where)
  sync(f"set aside checkpoint {step}")
  manager.reload()
  return where


class PartialEpoch:
  """The per-step metrics of an epoch that a signal interrupted, kept beside its checkpoint
  so that the resumed epoch's row equals an uninterrupted run's."""

  def __init__(self, workdir: str, steps_per_epoch: int):
    self.path = run_folder.path(workdir, run_folder.PARTIAL_EPOCH)
    self.steps_per_epoch = steps_per_epoch
    self.metrics: dict[str, np.ndarray] | None = None

  def save(self, step: int, metrics: dict) -> None:
    """Records ``metrics`` (arrays over the epoch's steps so far) for checkpoint ``step``."""
    if jax.process_index() == 0:
      values = {k: [float(x) for x in np.asarray(v)] for k, v in metrics.items()}
      jsonl.replace_text(self.path, json.dumps(dict(step=step, metrics=values)))
    sync("partial epoch saved")

  def check(self, step: int, state) -> None:
    """For a mid-epoch ``step``: loads its record, or raises ValueError if there is none."""
    del state
    if step % self.steps_per_epoch == 0:
      return
    try:
      with open(self.path) as f:
        record = json.load(f)
    except (OSError, ValueError) as e:
      raise ValueError(f"its epoch's earlier steps are not recorded ({e})") from None
    if record.get("step") != step:
      raise ValueError(f"{self.path} belongs to update {record.get('step')}")
    self.metrics = {k: np.asarray(v, np.float32) for k, v in record["metrics"].items()}
    if any(len(v) != step % self.steps_per_epoch for v in self.metrics.values()):
      raise ValueError(f"{self.path} does not hold {step % self.steps_per_epoch} steps")


class RunCheckpoints:
  """A run's checkpoints, indexed by update count. Saving is asynchronous: the state saved
  must not be donated later. Leaving the context waits for the last save."""

  def __init__(
    self, workdir: str, *, keep: int | None, steps_per_epoch: int, read_only: bool = False
  ):
    self.workdir = workdir
    self.directory = os.path.abspath(run_folder.path(workdir, run_folder.CHECKPOINTS))
    options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=not read_only, read_only=read_only
    )
    self.manager = ocp.CheckpointManager(self.directory, options=options)
    self.partial = PartialEpoch(workdir, steps_per_epoch)

  def steps(self) -> list[int]:
    """The updates at which checkpoints are kept, oldest first."""
    return sorted(self.manager.all_steps())

  def restore_at(self, step: int, target):
    """The state of checkpoint ``step``, in ``target``'s layout (ValueError if it differs)."""
    return restore_step(self.manager, step, target)

  def restore(self, state) -> tuple[int, Any, dict | None]:
    """``(step, state, metrics)`` of the newest checkpoint that restores, ``metrics`` those of
    its epoch's earlier steps (None at an epoch's end)."""
    step, state = restore_newest(self.manager, state, self.workdir, check=self.partial.check)
    return step, state, self.partial.metrics if step % self.partial.steps_per_epoch else None

  def save(self, step: int, state) -> None:
    self.manager.save(step, args=ocp.args.StandardSave(state))

  def save_interrupted(self, step: int, state, metrics: dict) -> None:
    """Saves a mid-epoch ``state`` with the epoch's per-step ``metrics`` so far, and waits."""
    self.partial.save(step, metrics)
    self.save(step, state)
    self.manager.wait_until_finished()

  def describe_kept(self) -> str:
    if self.manager.all_steps():
      return f"the last good checkpoint is kept in {self.directory}"
    return "no checkpoint yet"

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.manager.wait_until_finished()
    self.manager.close()


def sync(name: str) -> None:
  """Waits for every process (a no-op in a single-process run)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)
