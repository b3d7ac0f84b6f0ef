"""Reading run folders: one row per run, a run's files, and the keys that group runs.

Accuracies are fractions in the run files and percent here; groups (:data:`GROUP_KEYS`) and
families (:data:`FAMILY_KEYS`) are as in docs/method.md §8. An action that is not thresholded
has its threshold left empty.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pandas as pd

from gradamp_jax import actions as ga_actions
from gradamp_jax import measures, run_folder
from gradamp_jax import phases as ga_phases

GROUP_KEYS = (
  ("model", "dataset", "optimizer")
  + ("method", "where", "action", "action_params", "measure", "case")
  + ("threshold", "reselect_every", "ratio")
)
RUN_COLUMNS = (
  ("workdir", *GROUP_KEYS, "seed", "finished", "epochs")
  + ("final_test_accuracy", "final_val_accuracy", "best_test_accuracy")
  + ("mean_epoch_seconds", "timed_epochs", "machine")
)
SUMMARY_COLUMNS = GROUP_KEYS + ("n", "test_mean", "test_std", "test_best", "val_mean")
# What a family's runs may differ in besides the seed (see above).
SETTING_KEYS = ("threshold", "ratio", "action_params")
# The keys of a row of epoch_times.csv: a group without its setting and re-selection.
TIME_KEYS = tuple(k for k in GROUP_KEYS if k not in SETTING_KEYS + ("reselect_every",))
# A family: model, dataset, optimizer, then the re-selection, then the method's keys.
FAMILY_KEYS = TIME_KEYS[:3] + ("reselect_every",) + TIME_KEYS[3:]
CHOSEN_COLUMNS = dict(
  threshold="chosen_threshold", ratio="chosen_ratio", action_params="chosen_params"
)
COMPARISON_COLUMNS = (
  FAMILY_KEYS
  + ("chosen_threshold", "chosen_ratio", "chosen_params", "chosen_by")
  + ("n", "test_mean", "test_std", "diff_mean", "diff_ci_low", "diff_ci_high", "paper_best")
)
EPOCH_TIME_COLUMNS = TIME_KEYS + ("n", "seconds_mean", "seconds_std", "overhead_percent", "note")

# The amplification keys that mean something for each method; the others are left empty.
APPLIES = {
  "none": (),
  "intelligent": ("where", "action", "measure", "case", "threshold", "reselect_every"),
  "matched_random": ("where", "action", "measure", "case", "threshold", "reselect_every"),
  "random": ("where", "action", "ratio", "reselect_every"),
  "all": ("where", "action", "reselect_every"),
}
_INT_COLUMNS = ("case", "reselect_every", "seed", "epochs", "timed_epochs", "n")
_FLOAT_COLUMNS = ("threshold", "chosen_threshold", "ratio", "chosen_ratio")
_TEXT_COLUMNS = (
  *(k for k in GROUP_KEYS if k not in _INT_COLUMNS + _FLOAT_COLUMNS),
  "chosen_params",
)
METHOD_ORDER = ("none", "all", "random", "intelligent", "matched_random")


def read_frame(workdir: str, name: str) -> pd.DataFrame:
  """JSON-lines file ``name`` of a run as a DataFrame; empty when missing."""
  return pd.DataFrame(run_folder.read_rows(workdir, name, missing_ok=True))


def read_frames(workdirs, name: str) -> dict[str, pd.DataFrame]:
  """:func:`read_frame` of each run, by workdir; runs without rows left out."""
  frames = {w: read_frame(w, name) for w in workdirs}
  return {w: frame for w, frame in frames.items() if len(frame)}


def load_run(workdir: str) -> dict:
  """One run: ``config`` and ``info`` dicts (``{}`` when unreadable), and ``metrics``,
  ``layer_stats``, ``directionality`` DataFrames.

  Raises:
    ValueError: ``workdir`` is not a run folder (no ``config.json`` in it).
  """
  if not os.path.isfile(run_folder.path(workdir, run_folder.CONFIG)):
    reason = "does not exist" if not os.path.exists(workdir) else "holds no config.json"
    raise ValueError(f"run folder {workdir!r} ({os.path.abspath(workdir)}) {reason}")
  return dict(
    config=run_folder.read_json(workdir, run_folder.CONFIG, default={}),
    info=run_folder.read_json(workdir, run_folder.RUN_INFO, default={}),
    metrics=read_frame(workdir, run_folder.METRICS),
    layer_stats=read_frame(workdir, run_folder.LAYER_STATS),
    directionality=read_frame(workdir, run_folder.DIRECTIONALITY),
  )


def run_keys(config: dict) -> dict:
  """The grouping keys and seed of a run, with the keys its method does not use empty."""
  amp = config.get("amplification", {})
  method = amp.get("method")
  applies = APPLIES.get(method, ())
  keys = dict({k: config.get(k) for k in ("model", "dataset", "optimizer")}, method=method)
  for key in ("where", "action", "measure", "case", "threshold", "reselect_every", "ratio"):
    keys[key] = amp.get(key) if key in applies else None
  action = ga_actions.ACTIONS.get(keys["action"])
  keys["action_params"] = None if action is None else ga_actions.params_text(action.name, amp)
  if action is not None and not action.thresholded:
    keys["threshold"] = None
  return dict(keys, seed=config.get("seed"))


def run_row(
  workdir: str, config: dict, metrics: pd.DataFrame, forked_at: int = 0, machine=None
) -> dict:
  """One row of ``runs.csv``; ``mean_epoch_seconds`` is over the :func:`timed_epochs`."""
  epochs = int(metrics["epoch"].max()) if len(metrics) else 0
  phases = config.get("phases")
  finished = bool(epochs and phases and epochs == ga_phases.num_epochs(phases))
  row = dict(workdir=workdir, **run_keys(config), finished=finished, epochs=epochs)
  row["final_test_accuracy"] = row["final_val_accuracy"] = row["best_test_accuracy"] = np.nan
  if epochs:
    last = metrics.sort_values("epoch").iloc[-1]
    if row["finished"]:
      row["final_test_accuracy"] = 100 * float(last["test_accuracy"])
      if "val_accuracy" in metrics and pd.notna(last["val_accuracy"]):
        row["final_val_accuracy"] = 100 * float(last["val_accuracy"])
    row["best_test_accuracy"] = 100 * float(metrics["test_accuracy"].max())
  seconds = timed_epochs(metrics, forked_at)
  row["mean_epoch_seconds"] = float(seconds.mean()) if len(seconds) else np.nan
  return dict(row, timed_epochs=len(seconds), machine=machine)


def timed_epochs(metrics: pd.DataFrame, forked_at: int = 0) -> pd.Series:
  """The seconds of the epochs after ``forked_at`` (0 if not forked) less each process's
  first (``first_epoch_after_start``, and the first after ``forked_at``): comparable times."""
  if not len(metrics):
    return pd.Series([], dtype=float)
  own = metrics[metrics["epoch"] > forked_at]
  warm_up = own["epoch"] == forked_at + 1
  if run_folder.FIRST_AFTER_START in own:
    warm_up |= own[run_folder.FIRST_AFTER_START].fillna(False).astype(bool)
  return own.loc[~warm_up, "epoch_seconds"].astype(float)


def load_runs(root: str) -> pd.DataFrame:
  """One row per run folder under ``root`` (:data:`RUN_COLUMNS`), sorted by workdir."""
  rows = []
  for workdir in run_folder.find_runs(root):
    config = run_folder.read_json(workdir, run_folder.CONFIG, default={})
    forks = run_folder.read_json(workdir, run_folder.FORK, default=[])
    info = run_folder.read_json(workdir, run_folder.RUN_INFO, default={})
    metrics = read_frame(workdir, run_folder.METRICS)
    forked_at = max((int(f["epoch"]) for f in forks), default=0)
    rows.append(run_row(workdir, config, metrics, forked_at, machine_of(info)))
  return typed_frame(pd.DataFrame(rows, columns=list(RUN_COLUMNS)))


def machine_of(info: dict):
  """A run's machine from its ``run.json``: the CPU model (when recorded) and the devices."""
  if not info:
    return None
  devices = info.get("devices") or []
  kinds = sorted({d.split(":")[0] for d in devices})
  where = f"{len(devices)}× {'+'.join(kinds)}" if devices else "?"
  return f"{info['cpu']}, {where}" if info.get("cpu") else where


def typed_frame(frame: pd.DataFrame) -> pd.DataFrame:
  """Integer columns as nullable integers (empty, not ``1.0``, in CSV files)."""
  for column in frame.columns.intersection(_INT_COLUMNS):
    values = [None if is_missing(v) else int(v) for v in frame[column]]
    frame[column] = pd.array(values, dtype="Int64")
  for column in frame.columns.intersection(_TEXT_COLUMNS):
    frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
  for column in frame.columns.intersection(_FLOAT_COLUMNS):
    frame[column] = frame[column].astype(float)
  return frame


def is_missing(value) -> bool:
  """None, pandas' NA or a float NaN."""
  return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def measure_columns(directionality: pd.DataFrame) -> list[str]:
  """The measures a ``directionality.jsonl`` frame records: the registered ones in definition
  order, then any other in file order."""
  known = [m for m in measures.MEASURES if m in directionality]
  keys = set(run_folder.DIRECTIONALITY_KEYS) | set(known)
  return known + [c for c in directionality.columns if c not in keys]


def group_conflicts(runs: pd.DataFrame) -> list[str]:
  """Problems with the groups of finished runs, one sentence each: a repeated seed, or config
  fields outside :data:`GROUP_KEYS` that differ between a group's runs (e.g. ``phases``)."""
  problems = []
  done = runs[runs["finished"]]
  for keys, group in done.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    name = ", ".join(f"{k}={v}" for k, v in zip(GROUP_KEYS, keys) if not is_missing(v))
    repeated = sorted(group["seed"][group["seed"].duplicated()].unique())
    if repeated:
      problems.append(f"{name}: seed {', '.join(map(str, repeated))} occurs more than once")
    configs = [run_folder.read_json(w, run_folder.CONFIG, default={}) for w in group["workdir"]]
    ignored = ["seed", *(f"amplification.{k}" for k in GROUP_KEYS + ("method",))]
    if keys[GROUP_KEYS.index("method")] == "none":
      ignored.append("amplification.")
    fields = {k for c in configs[1:] for k in run_folder.differing_fields(configs[0], c, ignored)}
    if fields:
      problems.append(f"{name}: runs pooled over seeds differ in {', '.join(sorted(fields))}")
  return problems
