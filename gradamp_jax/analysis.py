"""Reading run folders and the statistics of the report; the notebooks call only these.

A run folder holds ``config.json`` and ``metrics.jsonl``, and may hold ``run.json``,
``layer_stats.jsonl`` (one row per layer at each selection) and ``directionality.jsonl``
(G and G′ of every layer at every epoch), all written by :mod:`gradamp_jax.train`. Runs may
lie at any depth under a sweep's root; no index file is needed.

Accuracies are fractions in the run files and percent in everything returned here. How
results are compared (SPEC §8):

* the final accuracy of a run is its last epoch's test accuracy, defined only for finished
  runs (every epoch of its phases done); unfinished runs are listed and left out of every
  statistic;
* a group is the runs that differ only in seed (:data:`GROUP_KEYS`); its spread is the
  sample standard deviation (ddof=1, undefined for one run);
* a family (:data:`FAMILY_KEYS`) is a group without its threshold: its threshold is chosen on
  the validation split when every run of the family has one (highest mean validation
  accuracy, ties to the smaller threshold), else on test (the paper's protocol, optimistic);
  ``matched_random`` takes the threshold chosen for ``intelligent`` with its measure and case
  (and ``random`` run at several ratios has its ratio chosen the same way);
* a family's difference to ``none`` pairs runs by seed: mean difference and a 95 % Student-t
  interval.
"""

from __future__ import annotations

import json
import math
import os
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

RUN_COLUMNS = (
    "workdir", "model", "dataset", "method", "measure", "case", "threshold",
    "reselect_every", "ratio", "seed", "finished", "epochs", "final_test_accuracy",
    "final_val_accuracy", "best_test_accuracy", "mean_epoch_seconds")
GROUP_KEYS = ("model", "dataset", "method", "measure", "case", "threshold", "reselect_every",
              "ratio")
SUMMARY_COLUMNS = GROUP_KEYS + ("n", "test_mean", "test_std", "test_best", "val_mean")
FAMILY_KEYS = ("model", "dataset", "reselect_every", "method", "measure", "case")
COMPARISON_COLUMNS = FAMILY_KEYS + (
    "chosen_threshold", "chosen_by", "n", "test_mean", "test_std", "diff_mean", "diff_ci_low",
    "diff_ci_high", "paper_best")
EPOCH_TIME_COLUMNS = ("model", "dataset", "method", "measure", "case", "n", "seconds_mean",
                      "seconds_std", "overhead_percent")

# The amplification keys that mean something for each method; the others are left empty.
APPLIES = {
    "none": (),
    "intelligent": ("measure", "case", "threshold", "reselect_every"),
    "matched_random": ("measure", "case", "threshold", "reselect_every"),
    "random": ("ratio", "reselect_every"),
    "all": ("reselect_every",),
}
_INT_COLUMNS = ("case", "reselect_every", "seed", "epochs", "n")
METHOD_ORDER = ("none", "all", "random", "intelligent", "matched_random")


# ----------------------------------------------------------------------------- reading


def read_jsonl(path: str) -> list[dict]:
  """Rows of a JSON-lines file; ``[]`` when it is missing.

  A last line that does not parse (a run killed while writing it) is dropped; a bad line
  anywhere else raises ``ValueError`` naming the file and line.
  """
  if not os.path.exists(path):
    return []
  with open(path) as f:
    lines = [(number, line) for number, line in enumerate(f, 1) if line.strip()]
  rows = []
  for i, (number, line) in enumerate(lines):
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == len(lines) - 1:
        break
      raise ValueError(f"{path}:{number}: not a JSON row ({e})") from e
  return rows


def read_frame(path: str) -> pd.DataFrame:
  """A JSON-lines file as a DataFrame (see :func:`read_jsonl`); empty when missing."""
  return pd.DataFrame(read_jsonl(path))


def find_runs(root: str) -> list[str]:
  """Run folders under ``root`` at any depth (holding ``config.json`` and
  ``metrics.jsonl``), sorted; hidden folders, ``checkpoints`` and ``tensorboard`` are not
  searched."""
  if not os.path.isdir(root):
    raise ValueError(f"ROOT {root!r} is not a directory")
  found = []
  for folder, subfolders, files in os.walk(root):
    if "config.json" in files and "metrics.jsonl" in files:
      found.append(folder)
    subfolders[:] = sorted(s for s in subfolders
                           if s not in ("checkpoints", "tensorboard") and not s.startswith("."))
  return sorted(found)


def load_run(workdir: str) -> dict:
  """One run: ``config`` and ``info`` (``run.json``; ``{}`` when missing or unreadable)
  dicts, and ``metrics``, ``layer_stats``, ``directionality`` DataFrames."""
  return dict(config=_read_json(os.path.join(workdir, "config.json")),
              info=_read_json(os.path.join(workdir, "run.json")),
              metrics=read_frame(os.path.join(workdir, "metrics.jsonl")),
              layer_stats=read_frame(os.path.join(workdir, "layer_stats.jsonl")),
              directionality=read_frame(os.path.join(workdir, "directionality.jsonl")))


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, json.JSONDecodeError):  # missing, or half-written by a killed run
    return {}


def run_keys(config: dict) -> dict:
  """The grouping keys and seed of a run, with the keys its method does not use empty."""
  amp = config.get("amplification", {})
  method = amp.get("method")
  applies = APPLIES.get(method, ())
  keys = dict(model=config.get("model"), dataset=config.get("dataset"), method=method)
  for key in ("measure", "case", "threshold", "reselect_every", "ratio"):
    keys[key] = amp.get(key) if key in applies else None
  keys["seed"] = config.get("seed")
  return keys


def num_epochs(config: dict) -> Optional[int]:
  """The last phase's end epoch, or None when the config has no phases."""
  phases = config.get("phases") or []
  return int(phases[-1][0]) if phases else None


def run_row(workdir: str, config: dict, metrics: pd.DataFrame) -> dict:
  """One row of ``runs.csv`` (accuracies in percent).

  ``mean_epoch_seconds`` leaves out the first epoch, which includes compilation (all epochs
  of a one-epoch run); the first epoch after a resume compiles too and is kept.
  """
  row = dict(workdir=workdir, **run_keys(config))
  epochs = int(metrics["epoch"].max()) if len(metrics) else 0
  row["finished"] = bool(epochs and epochs == num_epochs(config))
  row["epochs"] = epochs
  row["final_test_accuracy"] = row["final_val_accuracy"] = np.nan
  row["best_test_accuracy"] = row["mean_epoch_seconds"] = np.nan
  if epochs:
    last = metrics.sort_values("epoch").iloc[-1]
    if row["finished"]:
      row["final_test_accuracy"] = 100 * float(last["test_accuracy"])
      if "val_accuracy" in metrics and pd.notna(last["val_accuracy"]):
        row["final_val_accuracy"] = 100 * float(last["val_accuracy"])
    row["best_test_accuracy"] = 100 * float(metrics["test_accuracy"].max())
    seconds = metrics.loc[metrics["epoch"] > 1, "epoch_seconds"] if epochs > 1 \
        else metrics["epoch_seconds"]
    row["mean_epoch_seconds"] = float(seconds.mean())
  return row


def load_runs(root: str) -> pd.DataFrame:
  """One row per run folder under ``root`` (:data:`RUN_COLUMNS`), sorted by workdir."""
  rows = []
  for workdir in find_runs(root):
    config = _read_json(os.path.join(workdir, "config.json"))
    rows.append(run_row(workdir, config, read_frame(os.path.join(workdir, "metrics.jsonl"))))
  return _typed(pd.DataFrame(rows, columns=list(RUN_COLUMNS)))


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
  """Integer columns as nullable integers (empty, not ``1.0``, in CSV files)."""
  for column in _INT_COLUMNS:
    if column in frame:
      frame[column] = pd.array(
          [None if is_missing(v) else int(v) for v in frame[column]], dtype="Int64")
  for column in ("model", "dataset", "method", "measure"):
    if column in frame:
      frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
  if "threshold" in frame:
    frame["threshold"] = frame["threshold"].astype(float)
  return frame


def is_missing(value) -> bool:
  """None, pandas' NA or a float NaN."""
  return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


# ----------------------------------------------------------------------------- statistics


def sample_std(values) -> float:
  """Sample standard deviation (ddof=1); NaN for fewer than two values."""
  values = np.asarray(values, float)
  return float(np.std(values, ddof=1)) if len(values) > 1 else np.nan


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
  """Mean and two-sided Student-t confidence interval of the mean of ``values``.

  ``mean ± t_{(1+confidence)/2, n-1} · s / √n`` with the sample std ``s`` (ddof=1); the
  interval is NaN for fewer than two values.
  """
  values = np.asarray(values, float)
  n = len(values)
  mean = float(values.mean()) if n else np.nan
  if n < 2:
    return mean, np.nan, np.nan
  half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * sample_std(values) / math.sqrt(n)
  return mean, mean - half, mean + half


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
  """``summary.csv``: one row per group of finished runs differing only in seed
  (:data:`SUMMARY_COLUMNS`; accuracies in percent)."""
  done = runs[runs["finished"]]
  rows = []
  for keys, group in done.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    test, val = group["final_test_accuracy"], group["final_val_accuracy"]
    rows.append(dict(zip(GROUP_KEYS, keys), n=len(group), test_mean=test.mean(),
                     test_std=sample_std(test), test_best=test.max(),
                     val_mean=val.mean() if val.notna().all() else np.nan))
  return _sorted(_typed(pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
  """Rows by model, dataset, re-selection, method (:data:`METHOD_ORDER`), measure, case,
  threshold; empty keys first."""
  if frame.empty:
    return frame.reset_index(drop=True)
  order = {m: i for i, m in enumerate(METHOD_ORDER)}
  rank = frame["method"].map(lambda m: order.get(m, len(order)))
  keys = ([k for k in ("model", "dataset", "reselect_every") if k in frame] + ["_rank"]
          + [k for k in ("measure", "case", "threshold", "chosen_threshold", "ratio")
             if k in frame])
  return (frame.assign(_rank=rank).sort_values(keys, na_position="first", kind="stable")
          .drop(columns="_rank").reset_index(drop=True))


def choose_threshold(groups: pd.DataFrame) -> tuple[float, str]:
  """The chosen threshold of one family and how it was chosen.

  Args:
    groups: the family's rows of :func:`summarize` (one per threshold).

  Returns:
    ``(threshold, "validation")``: highest ``val_mean`` when every group has one (every
    run of the family had a validation split); else ``(threshold, "test")``: highest
    ``test_mean``. Ties go to the smaller threshold.
  """
  by = "validation" if groups["val_mean"].notna().all() else "test"
  score = groups["val_mean" if by == "validation" else "test_mean"]
  best = groups.assign(_score=score).sort_values(["_score", "threshold"],
                                                 ascending=[False, True])
  return float(best["threshold"].iloc[0]), by


def paired_difference(runs: pd.DataFrame, baseline: pd.DataFrame) -> tuple:
  """Mean and 95 % t interval of ``final_test_accuracy`` minus the baseline's, over the
  seeds present in both (a seed repeated within one side is averaged first)."""
  a = runs.groupby("seed")["final_test_accuracy"].mean()
  b = baseline.groupby("seed")["final_test_accuracy"].mean()
  shared = a.index.intersection(b.index)
  return t_interval((a[shared] - b[shared]).to_numpy())


def compare(runs: pd.DataFrame) -> pd.DataFrame:
  """``comparison.csv`` (:data:`COMPARISON_COLUMNS`): per (model, dataset, reselect_every)
  and amplified family, the test accuracy at the chosen threshold, its paired difference
  to ``none`` and the paper's best-of; plus one row per ``none`` group.

  ``matched_random`` takes the threshold (and ``chosen_by``) of the ``intelligent`` family
  with the same model, dataset, re-selection, measure and case; without one, or without
  matched runs at that threshold, it is chosen by its own accuracies. ``paper_best`` is the
  best final test accuracy of any run of the family (all thresholds and seeds), the paper's
  Tables 3–4 protocol.
  """
  done = runs[runs["finished"]]
  summary = summarize(runs)
  rows = []
  chosen = {}  # (model, dataset, reselect_every, measure, case) -> intelligent's choice
  families = list(done.groupby(list(FAMILY_KEYS), dropna=False, sort=False))
  families.sort(key=lambda item: item[0][3] == "matched_random")  # intelligent first
  for keys, family in families:
    key = dict(zip(FAMILY_KEYS, keys))
    method = key["method"]
    baseline = done[(done["method"] == "none") & (done["model"] == key["model"])
                    & (done["dataset"] == key["dataset"])]
    if method == "none":
      rows.append(dict(key, n=len(family), test_mean=family["final_test_accuracy"].mean(),
                       test_std=sample_std(family["final_test_accuracy"])))
      continue
    row = dict(key, paper_best=family["final_test_accuracy"].max())
    selected = family
    if "threshold" in APPLIES.get(method, ()):
      groups = summary[_matches(summary, key)]
      pair = (key["model"], key["dataset"], key["reselect_every"], key["measure"], key["case"])
      if method == "matched_random" and pair in chosen and np.isclose(
          family["threshold"], chosen[pair][0]).any():
        threshold, by = chosen[pair]
      else:
        threshold, by = choose_threshold(groups)
      if method == "intelligent":
        chosen[pair] = threshold, by
      row.update(chosen_threshold=threshold, chosen_by=by)
      selected = family[np.isclose(family["threshold"], threshold)]
    elif family["ratio"].nunique() > 1:  # random at several ratios: chosen like a threshold
      groups = summary[_matches(summary, key)].rename(columns={"threshold": "_t",
                                                               "ratio": "threshold"})
      ratio, by = choose_threshold(groups)
      row.update(chosen_by=by)
      selected = family[np.isclose(family["ratio"], ratio)]
    test = selected["final_test_accuracy"]
    diff, low, high = paired_difference(selected, baseline) if len(selected) else (np.nan,) * 3
    row.update(n=len(selected), test_mean=test.mean() if len(test) else np.nan,
               test_std=sample_std(test), diff_mean=diff, diff_ci_low=low,
               diff_ci_high=high)
    rows.append(row)
  return _sorted(_typed(pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))))


def _matches(frame: pd.DataFrame, key: dict) -> pd.Series:
  """Rows of ``frame`` equal to ``key`` on its columns, empty (missing) matching empty."""
  keep = pd.Series(True, index=frame.index)
  for column, value in key.items():
    if is_missing(value):
      keep &= frame[column].isna()
    else:
      keep &= frame[column].eq(value).fillna(False).astype(bool)
  return keep


def chosen_runs(runs: pd.DataFrame, row) -> pd.DataFrame:
  """The finished runs behind one row of :func:`compare`."""
  key = {k: row[k] for k in FAMILY_KEYS}
  if row["method"] == "none":
    key = dict(model=row["model"], dataset=row["dataset"], method="none")
  done = runs[runs["finished"]]
  family = done[_matches(done, key)]
  if not is_missing(row.get("chosen_threshold")):
    family = family[np.isclose(family["threshold"], row["chosen_threshold"])]
  return family


def epoch_times(runs: pd.DataFrame) -> pd.DataFrame:
  """Tables 1–2: mean ± std of ``mean_epoch_seconds`` per (model, dataset, method,
  measure, case) over finished runs, and the overhead in percent against ``none``
  (``100 · (mean / none's mean − 1)``)."""
  done = runs[runs["finished"]]
  keys = ["model", "dataset", "method", "measure", "case"]
  rows = []
  for values, group in done.groupby(keys, dropna=False, sort=False):
    seconds = group["mean_epoch_seconds"]
    rows.append(dict(zip(keys, values), n=len(group), seconds_mean=seconds.mean(),
                     seconds_std=sample_std(seconds)))
  table = pd.DataFrame(rows, columns=list(EPOCH_TIME_COLUMNS))
  for i, row in table.iterrows():
    none = table[(table["method"] == "none") & (table["model"] == row["model"])
                 & (table["dataset"] == row["dataset"])]
    if len(none):
      table.loc[i, "overhead_percent"] = 100 * (row["seconds_mean"]
                                                / none["seconds_mean"].iloc[0] - 1)
  return _sorted(_typed(table))


# Config fields that may differ between runs of one group: the seed, where data lives and
# how the work is cut into calls.
_FREE_FIELDS = ("seed", "data_dir", "image_folder", "download", "eval_batch_size",
                "steps_per_dispatch", "keep_checkpoints")


def group_conflicts(runs: pd.DataFrame) -> list[str]:
  """Problems with the groups of :func:`summarize`, one sentence each: a seed that occurs
  more than once in a group, or config fields outside :data:`GROUP_KEYS` (and the seed
  and data location) that differ between a group's runs, e.g. ``phases`` or
  ``amplification.eligible``."""
  problems = []
  done = runs[runs["finished"]]
  for keys, group in done.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    name = ", ".join(f"{k}={v}" for k, v in zip(GROUP_KEYS, keys) if not is_missing(v))
    repeated = sorted(group["seed"][group["seed"].duplicated()].unique())
    if repeated:
      problems.append(f"{name}: seed {', '.join(map(str, repeated))} occurs more than once")
    flat = [_flatten(_read_json(os.path.join(w, "config.json"))) for w in group["workdir"]]
    ignored = set(_FREE_FIELDS) | {f"amplification.{k}" for k in GROUP_KEYS + ("method",)}
    if keys[GROUP_KEYS.index("method")] == "none":
      ignored |= {k for f in flat for k in f if k.startswith("amplification.")}
    fields = sorted(k for k in {k for f in flat for k in f} - ignored
                    if len({json.dumps(f.get(k), sort_keys=True) for f in flat}) > 1)
    if fields:
      problems.append(f"{name}: runs pooled over seeds differ in {', '.join(fields)}")
  return problems


def _flatten(config: dict, prefix: str = "") -> dict:
  out = {}
  for key, value in config.items():
    if isinstance(value, dict):
      out.update(_flatten(value, f"{prefix}{key}."))
    else:
      out[prefix + key] = value
  return out


# ----------------------------------------------------------------------------- curves


def mean_curves(workdirs, columns=("train_accuracy", "test_accuracy")) -> pd.DataFrame:
  """Per-epoch mean over runs of metrics ``columns`` (percent), with ``n`` runs per epoch."""
  frames = [read_frame(os.path.join(w, "metrics.jsonl")) for w in workdirs]
  frames = [f for f in frames if len(f)]
  if not frames:
    return pd.DataFrame(columns=["epoch", "n", *columns])
  stacked = pd.concat(frames)
  curves = stacked.groupby("epoch")[list(columns)].mean() * 100
  curves.insert(0, "n", stacked.groupby("epoch").size())
  return curves.reset_index()


def reselection_label(reselect_every) -> str:
  """``once per phase`` for 0, else ``every k epochs``."""
  return "once per phase" if reselect_every == 0 else f"every {reselect_every} epochs"


def family_label(row) -> str:
  """A short name of a family: ``none``, ``all``, ``random``, ``G′ c1``,
  ``matched G′ c1``."""
  method = row["method"]
  if method in ("intelligent", "matched_random"):
    name = f"{'G′' if row['measure'] == 'G_prime' else 'G'} c{int(row['case'])}"
    return name if method == "intelligent" else f"matched {name}"
  return str(method)


# ----------------------------------------------------------------------------- layers


def normalize(values) -> np.ndarray:
  """z-scores over layers (SPEC §4): ``(v - mean) / std`` with the population std; all
  zeros when the std is below 1e-6 or not finite."""
  values = np.asarray(values, float)
  std = values.std() if len(values) else np.nan
  if not np.isfinite(std) or std < 1e-6:
    return np.zeros_like(values)
  return (values - values.mean()) / std


def selection_table(layer_stats: pd.DataFrame) -> pd.DataFrame:
  """Layers (network order) × selection epochs: 1 where the layer was amplified after
  that analysis."""
  if layer_stats.empty:
    return pd.DataFrame()
  return layer_stats.pivot_table(index="layer", columns="epoch", values="selected",
                                 aggfunc="max", sort=False).astype(int)


def selection_frequency(layer_stats: list[pd.DataFrame]) -> pd.DataFrame:
  """Layers (network order) × selection events: the fraction of runs (e.g. the seeds of
  one configuration) that selected the layer at that event."""
  frames = [s for s in layer_stats if len(s)]
  if not frames:
    return pd.DataFrame()
  order = list(dict.fromkeys(frames[0]["layer"]))
  stacked = pd.concat(frames)
  table = stacked.pivot_table(index="layer", columns="epoch", values="selected",
                              aggfunc="mean")
  return table.reindex(order)


def selected_counts(layer_stats: pd.DataFrame) -> pd.DataFrame:
  """Per selection event (``epoch``): ``selected`` layers, ``eligible`` layers and, for
  ``matched_random``, ``by_measure`` (layers the measure chose) and ``overlap`` (chosen
  by both)."""
  if layer_stats.empty:
    return pd.DataFrame(columns=["epoch", "selected", "eligible"])
  stats = layer_stats.assign(selected=layer_stats["selected"].astype(bool))
  grouped = stats.groupby("epoch", sort=True)
  table = pd.DataFrame(dict(selected=grouped["selected"].sum(),
                            eligible=grouped["eligible"].sum()))
  if "selected_by_measure" in stats:
    by = stats["selected_by_measure"].fillna(False).astype(bool)
    stats = stats.assign(by_measure=by, overlap=by & stats["selected"])
    grouped = stats.groupby("epoch", sort=True)
    table["by_measure"] = grouped["by_measure"].sum()
    table["overlap"] = grouped["overlap"].sum()
  return table.astype(int).reset_index()


def directionality_table(directionality: list[pd.DataFrame], measure: str) -> pd.DataFrame:
  """Layers (network order) × epochs of ``measure`` (``G`` or ``G_prime``), mean over the
  given runs' ``directionality.jsonl`` frames."""
  if measure not in ("G", "G_prime"):
    raise ValueError(f"measure={measure!r}: allowed are 'G' and 'G_prime'")
  frames = [d for d in directionality if len(d)]
  if not frames:
    return pd.DataFrame()
  stacked = pd.concat(frames)
  table = stacked.pivot_table(index=["index", "layer"], columns="epoch", values=measure,
                              aggfunc="mean").sort_index(level="index")
  return table.droplevel("index")


def measure_agreement(directionality: pd.DataFrame, case: int = 1,
                      threshold: float = 1.0) -> pd.DataFrame:
  """Per epoch of one run, how far G and G′ agree over the eligible layers: Spearman's
  rank correlation ``spearman``, the layers each would select at ``threshold``
  (``selected_G``, ``selected_G_prime``; case 1: ``z > t``, case 2: ``|z| > t``) and how
  many both select (``both``)."""
  if case not in (1, 2):
    raise ValueError(f"case={case!r}: allowed are 1 and 2")
  rows = []
  if directionality.empty:
    directionality = pd.DataFrame(columns=["epoch", "eligible", "G", "G_prime"])
  eligible = directionality[directionality["eligible"].astype(bool)]
  for epoch, frame in eligible.groupby("epoch", sort=True):
    picks = {}
    for measure in ("G", "G_prime"):
      z = normalize(frame[measure])
      picks[measure] = (z if case == 1 else np.abs(z)) > threshold
    rho = (scipy_stats.spearmanr(frame["G"], frame["G_prime"]).statistic
           if len(frame) > 1 else np.nan)
    rows.append(dict(epoch=epoch, layers=len(frame), spearman=float(rho),
                     selected_G=int(picks["G"].sum()),
                     selected_G_prime=int(picks["G_prime"].sum()),
                     both=int((picks["G"] & picks["G_prime"]).sum())))
  return pd.DataFrame(rows, columns=["epoch", "layers", "spearman", "selected_G",
                                     "selected_G_prime", "both"])


def selection_sizes(runs: pd.DataFrame) -> pd.DataFrame:
  """Layers selected per selection event of the finished ``intelligent`` runs: per group
  (:data:`GROUP_KEYS`) ``n`` runs, ``selected_mean`` and ``selected_std`` (ddof=1 over runs
  of each run's mean over its events) and ``eligible`` layers."""
  done = runs[runs["finished"] & (runs["method"] == "intelligent")]
  rows = []
  for keys, group in done.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    per_run, eligible = [], 0
    for workdir in group["workdir"]:
      counts = selected_counts(read_frame(os.path.join(workdir, "layer_stats.jsonl")))
      if len(counts):
        per_run.append(counts["selected"].mean())
        eligible = max(eligible, int(counts["eligible"].max()))
    if per_run:
      rows.append(dict(zip(GROUP_KEYS, keys), n=len(per_run),
                       selected_mean=float(np.mean(per_run)),
                       selected_std=sample_std(per_run), eligible=eligible))
  columns = list(GROUP_KEYS) + ["n", "selected_mean", "selected_std", "eligible"]
  return _sorted(_typed(pd.DataFrame(rows, columns=columns)))
