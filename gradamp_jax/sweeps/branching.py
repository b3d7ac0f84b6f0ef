"""Branched sweeps: train what a grid's runs share once, fork where their selections differ.

:func:`run_tree` trains one group of runs as a tree of forks (:func:`fork.fork`), and
:func:`run_forest` grows several level by level so a level can train as cohorts (docs/sweeps.md).
"""

from __future__ import annotations

import json
import os
from typing import Callable, NamedTuple

import ml_collections

import gradamp_jax as ga
from gradamp_jax import run_folder
from gradamp_jax.sweeps import fork as fork_lib
from gradamp_jax.training import optimizer
from gradamp_jax.training import steps as steps_lib


class Member(NamedTuple):
  name: str
  config: ml_collections.ConfigDict
  workdir: str


def roots(members: list[Member]) -> list[list[Member]]:
  """Members grouped into trees by :func:`fork.computation_fields`; members that do not
  track directionality are trees of their own."""
  groups: dict[str, list[Member]] = {}
  for m in members:
    fields = fork_lib.computation_fields(json.loads(m.config.to_json_best_effort()))
    key = json.dumps(fields) if m.config.track_directionality else m.name
    groups.setdefault(key, []).append(m)
  return list(groups.values())


def epochs_done(workdir: str) -> int:
  """Epochs a run folder has finished, by its checkpoints."""
  if not os.path.exists(run_folder.path(workdir, run_folder.RUN_INFO)):
    return 0
  info = run_folder.read_json(workdir, run_folder.RUN_INFO)  # unreadable: raises
  return run_folder.newest_step(workdir) // info["steps_per_epoch"]


def run_tree(
  members: list[Member],
  train_segment: Callable[[Member, int], None],
  log: Callable[[str], None] = print,
) -> list[dict]:
  """Trains one tree (members of one computation key) to the end.

  Args:
    members: the tree's members; the first trains the trunk.
    train_segment: ``train_segment(member, until_epoch)`` trains (or resumes) the member's
      run up to the end of ``until_epoch``.
    log: progress lines.

  Returns:
    The tree as rows: ``dict(member, trained=[first, last])`` for a trained segment (epochs
    ``first..last``), ``dict(member, forked_from, epoch)`` for a fork.
  """

  def train_segments(segments):
    for member, until in segments:
      train_segment(member, until)

  return run_forest([members], train_segments, log)


def run_forest(
  trees: list[list[Member]],
  train_segments: Callable[[list[tuple[Member, int]]], None],
  log: Callable[[str], None] = print,
) -> list[dict]:
  """Trains several trees level by level: each level's segments go to ``train_segments`` at
  once, as ``(member, until_epoch)`` pairs. Returns the rows as :func:`run_tree` does."""
  rows: list[dict] = []
  frontier = [(members, 0) for members in trees]
  while frontier:
    segments = [(members, start, *_segment_end(members, start)) for members, start in frontier]
    todo = []
    for members, start, until, _ in segments:
      if epochs_done(members[0].workdir) < until:
        shared = f" (shared by {len(members)} runs)" if len(members) > 1 else ""
        log(f"{members[0].name}: epochs {start + 1}-{until}{shared}")
        todo.append((members[0], until))
    if todo:
      train_segments(todo)
    frontier = []
    for members, start, until, forks in segments:
      rows.append(dict(member=members[0].name, trained=[start + 1, until]))
      frontier += _branch(members, until, forks, log, rows)
  return rows


def _segment_end(members, start) -> tuple[int, bool]:
  """``(its next selection epoch, True)`` or ``(the schedule's last epoch, False)``."""
  config = members[0].config
  points = []
  if len(members) > 1:
    every = config.amplification.reselect_every or None
    points = [e for e in ga.selection_epochs(config.phases, every) if e > start]
  return (points[0], True) if points else (ga.num_epochs(config.phases), False)


def _branch(members, until: int, forks: bool, log, rows) -> list:
  """Forks a group's other members from its trunk at ``until``; returns the groups going on."""
  rep = members[0]  # without forks, ``until`` is the schedule's last epoch
  groups = group_by_selection(members, rep, until) if forks else [members]
  if forks:
    log(f"after epoch {until}: {len(members)} runs make {len(groups)} distinct selections")
  for m in [m for group in groups for m in group if m is not rep]:
    if fork_lib.fork(m.config, m.workdir, rep.workdir, until):
      log(f"{m.name}: forked from {rep.name} at epoch {until}")
    rows.append(dict(member=m.name, forked_from=rep.name, epoch=until))
  return [(group, until) for group in groups] if forks else []


def group_by_selection(members: list[Member], trunk: Member, epoch: int) -> list[list[Member]]:
  """Members grouped by the selections their rules make on ``trunk``'s statistics up to
  the end of ``epoch``."""
  info = run_folder.read_json(trunk.workdir, run_folder.RUN_INFO)
  rows = run_folder.read_rows(trunk.workdir, run_folder.DIRECTIONALITY, until_epoch=epoch)
  steps_per_epoch = info["steps_per_epoch"]
  tx = optimizer.create_optimizer(trunk.config, steps_per_epoch)
  _, state = steps_lib.create_train_state(trunk.config, info["num_classes"], tx)
  groups: dict[tuple, list[Member]] = {}
  for m in members:
    selections = fork_lib.replay_selections(m.config, state.params, rows, steps_per_epoch, epoch)
    key = tuple(fork_lib.selection_key(s, m.config.amplification.where) for s in selections)
    groups.setdefault(key, []).append(m)
  return list(groups.values())


def count_epochs(tree: list[dict], members: list[Member]) -> dict:
  """``epochs_trained`` by the tree against ``epochs_members``, the members' schedules."""
  trained = sum(r["trained"][1] - r["trained"][0] + 1 for r in tree if "trained" in r)
  scheduled = sum(ga.num_epochs(m.config.phases) for m in members)
  return dict(epochs_trained=trained, epochs_members=scheduled)
