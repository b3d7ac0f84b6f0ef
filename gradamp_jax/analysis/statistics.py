"""Statistics of the report over run tables (read by :mod:`gradamp_jax.analysis.runs`):
tables in, tables out."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from gradamp_jax import measures
from gradamp_jax.analysis.runs import (
  CHOSEN_COLUMNS,
  COMPARISON_COLUMNS,
  EPOCH_TIME_COLUMNS,
  FAMILY_KEYS,
  GROUP_KEYS,
  METHOD_ORDER,
  SETTING_KEYS,
  SUMMARY_COLUMNS,
  TIME_KEYS,
  is_missing,
  measure_columns,
  typed_frame,
)


def sample_std(values) -> float:
  """Sample standard deviation (ddof=1); NaN for fewer than two values."""
  values = np.asarray(values, float)
  return float(np.std(values, ddof=1)) if len(values) > 1 else np.nan


def t_interval(values, confidence: float = 0.95) -> tuple[float, float, float]:
  """Mean and two-sided Student-t confidence interval ``mean ± t_{(1+c)/2, n-1} · s / √n``
  of ``values`` (NaN for fewer than two)."""
  values = np.asarray(values, float)
  n = len(values)
  mean = float(values.mean()) if n else np.nan
  if n < 2:
    return mean, np.nan, np.nan
  half = scipy_stats.t.ppf((1 + confidence) / 2, n - 1) * sample_std(values) / math.sqrt(n)
  return mean, mean - half, mean + half


def _accuracy(test: pd.Series) -> dict:
  """``n``, ``test_mean`` and ``test_std`` of final test accuracies."""
  return dict(n=len(test), test_mean=test.mean(), test_std=sample_std(test))


def summarize(runs: pd.DataFrame) -> pd.DataFrame:
  """``summary.csv``: one row per group of finished runs differing only in seed
  (:data:`SUMMARY_COLUMNS`; accuracies in percent)."""
  done = runs[runs["finished"]]
  rows = []
  for keys, group in done.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    test, val = group["final_test_accuracy"], group["final_val_accuracy"]
    row = dict(zip(GROUP_KEYS, keys), **_accuracy(test), test_best=test.max())
    rows.append(dict(row, val_mean=val.mean() if val.notna().all() else np.nan))
  return _sorted(typed_frame(pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))))


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
  """Rows by model, dataset, re-selection, method (:data:`METHOD_ORDER`), then the setting."""
  if frame.empty:
    return frame.reset_index(drop=True)
  order = {m: i for i, m in enumerate(METHOD_ORDER)}
  first = [k for k in ("model", "dataset", "reselect_every") if k in frame]
  then = [k for k in ("measure", "case", "threshold", "chosen_threshold", "ratio") if k in frame]
  ranked = frame.assign(_rank=frame["method"].map(lambda m: order.get(m, len(order))))
  ranked = ranked.sort_values([*first, "_rank", *then], na_position="first", kind="stable")
  return ranked.drop(columns="_rank").reset_index(drop=True)


def choose_setting(groups: pd.DataFrame, keys) -> tuple[dict, str]:
  """The chosen setting of one family (its values of ``keys``) and how it was chosen.

  Args:
    groups, keys: the family's rows of :func:`summarize`, and the :data:`SETTING_KEYS` they
      differ in.

  Returns:
    ``(setting, "validation")``: highest ``val_mean`` when every group has one; else
    ``(setting, "test")``: highest ``test_mean``. Ties go to the smaller setting.
  """
  by = "validation" if groups["val_mean"].notna().all() else "test"
  ranked = groups.assign(_score=-groups["val_mean" if by == "validation" else "test_mean"])
  first = ranked.sort_values(["_score", *keys], na_position="first", kind="stable").iloc[0]
  return {k: None if is_missing(first[k]) else first[k] for k in keys}, by


def paired_difference(runs: pd.DataFrame, baseline: pd.DataFrame) -> tuple:
  """Mean and 95 % t interval of ``final_test_accuracy`` minus the baseline's, over the
  seeds present in both (a seed repeated within one side is averaged first)."""
  a = runs.groupby("seed")["final_test_accuracy"].mean()
  b = baseline.groupby("seed")["final_test_accuracy"].mean()
  shared = a.index.intersection(b.index)
  return t_interval((a[shared] - b[shared]).to_numpy())


def compare(runs: pd.DataFrame) -> pd.DataFrame:
  """``comparison.csv`` (:data:`COMPARISON_COLUMNS`): per amplified family, the test accuracy
  at the chosen setting (:func:`choose_setting`), its paired difference to ``none`` and
  ``paper_best`` (best run of the family, Tables 3–4); plus one row per ``none`` group.
  ``matched_random`` takes its ``intelligent`` family's threshold when it has runs at it.
  """
  done = runs[runs["finished"]]
  summary = summarize(runs)
  rows, chosen = [], {}  # chosen: the family's keys but the method -> intelligent's choice
  method_at = FAMILY_KEYS.index("method")
  families = sorted(  # intelligent before matched_random
    done.groupby(list(FAMILY_KEYS), dropna=False, sort=False),
    key=lambda item: item[0][method_at] == "matched_random",
  )
  for keys, family in families:
    key = dict(zip(FAMILY_KEYS, keys))
    if key["method"] == "none":
      rows.append(dict(key, **_accuracy(family["final_test_accuracy"])))
      continue
    pair = tuple(key[k] for k in FAMILY_KEYS if k != "method")
    setting, by = _family_setting(summary[matches(summary, key)], family, chosen.get(pair))
    if key["method"] == "intelligent" and setting.get("threshold") is not None:
      chosen[pair] = setting["threshold"], by
    selected = family[matches(family, setting)]
    baseline = done[matches(done, none_key(key))]
    diff = paired_difference(selected, baseline) if len(selected) else (np.nan,) * 3
    row = dict(key, **_accuracy(selected["final_test_accuracy"]), chosen_by=by if setting else None)
    row.update({CHOSEN_COLUMNS[k]: v for k, v in setting.items()})
    row.update(zip(("diff_mean", "diff_ci_low", "diff_ci_high"), diff))
    rows.append(dict(row, paper_best=family["final_test_accuracy"].max()))
  return _sorted(typed_frame(pd.DataFrame(rows, columns=list(COMPARISON_COLUMNS))))


MATCHED_DIFF = ("diff_mean", "diff_ci_low", "diff_ci_high")


def against_matched(runs: pd.DataFrame) -> pd.DataFrame:
  """``matched.csv``: per ``intelligent`` group that has a ``matched_random`` group of the
  same keys (threshold included), the paired difference intelligent − matched random in
  final test accuracy over their shared seeds: ``n``, ``diff_mean`` and its 95 % t interval."""
  done = runs[runs["finished"]]
  rows = []
  intelligent = done[done["method"] == "intelligent"]
  for keys, group in intelligent.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    key = dict(zip(GROUP_KEYS, keys))
    control = done[matches(done, dict(key, method="matched_random"))]
    seeds = set(group["seed"]) & set(control["seed"])
    if seeds:
      diff = paired_difference(group, control)
      rows.append(dict(key, n=len(seeds), **dict(zip(MATCHED_DIFF, diff))))
  return _sorted(typed_frame(pd.DataFrame(rows, columns=[*GROUP_KEYS, "n", *MATCHED_DIFF])))


def _family_setting(groups: pd.DataFrame, family: pd.DataFrame, intelligent) -> tuple:
  """:func:`choose_setting` over the keys the groups differ in, at ``intelligent``'s if it can."""
  varies = lambda k: groups[k].nunique(dropna=False) > 1
  keys = [k for k in SETTING_KEYS if (k == "threshold" and family[k].notna().any()) or varies(k)]
  if not keys:
    return {}, None
  if intelligent is not None and np.isclose(family["threshold"], intelligent[0]).any():
    groups = groups[np.isclose(groups["threshold"], intelligent[0])]
    setting, _ = choose_setting(groups, keys)
    return dict(setting, threshold=intelligent[0]), intelligent[1]
  return choose_setting(groups, keys)


def none_key(row) -> dict:
  """What a row's ``none`` baseline shares with it: model, dataset and optimizer."""
  return dict(model=row["model"], dataset=row["dataset"], optimizer=row["optimizer"], method="none")


def none_row(comparison: pd.DataFrame, model, dataset, optimizer):
  """The ``none`` row of :func:`compare` for one model, dataset and optimizer, or None."""
  key = none_key(dict(model=model, dataset=dataset, optimizer=optimizer))
  rows = comparison[matches(comparison, key)]
  return rows.iloc[0] if len(rows) else None


def matches(frame: pd.DataFrame, key: dict) -> pd.Series:
  """Rows of ``frame`` equal to ``key`` on its columns: text compared exactly, numbers with
  ``np.isclose``, an empty (missing) value matching empty."""
  keep = pd.Series(True, index=frame.index)
  for column, value in key.items():
    if is_missing(value):
      keep &= frame[column].isna()
    elif isinstance(value, str):
      keep &= frame[column].eq(value).fillna(False).astype(bool)
    else:
      keep &= np.isclose(frame[column].astype(float), value)
  return keep


def chosen_runs(runs: pd.DataFrame, row) -> pd.DataFrame:
  """The finished runs behind one row of :func:`compare`."""
  key = none_key(row) if row["method"] == "none" else {k: row[k] for k in FAMILY_KEYS}
  done = runs[runs["finished"]]
  family = done[matches(done, key)]
  setting = {k: row[c] for k, c in CHOSEN_COLUMNS.items() if not is_missing(row.get(c))}
  return family[matches(family, setting)]


def epoch_times(runs: pd.DataFrame) -> pd.DataFrame:
  """Tables 1–2: mean ± std of ``mean_epoch_seconds`` per :data:`TIME_KEYS` group and the
  overhead in percent against ``none`` (timed on one machine); ``note`` says what is left out."""
  done = runs[runs["finished"]]
  rows, machines = [], []
  for values, group in done.groupby(list(TIME_KEYS), dropna=False, sort=False):
    timed = group[group["mean_epoch_seconds"].notna()]
    seconds, untimed = timed["mean_epoch_seconds"], len(group) - len(timed)
    note = f"{untimed} of {len(group)} runs untimed: no epoch of their own past the first after "
    note += "a start (forked or branched late, or resumed every epoch)"
    row = dict(zip(TIME_KEYS, values), n=len(timed), seconds_mean=seconds.mean())
    rows.append(dict(row, seconds_std=sample_std(seconds), note=note if untimed else ""))
    machines.append(set(timed["machine"].dropna()) if "machine" in timed else set())
  table = pd.DataFrame(rows, columns=list(EPOCH_TIME_COLUMNS))
  for i in range(len(table)):  # a RangeIndex: positions are labels
    table.loc[i, ["overhead_percent", "note"]] = _overhead(table, machines, i)
  return _sorted(typed_frame(table))


def _overhead(table: pd.DataFrame, machines: list, i: int) -> tuple:
  """Row ``i``'s overhead against its ``none`` and its note, or NaN and why not."""
  row, note = table.loc[i], table.loc[i, "note"]
  found = np.flatnonzero(matches(table, none_key(row)).to_numpy())
  if not len(found) or is_missing(row["seconds_mean"]):
    return np.nan, note
  j = int(found[0])
  both = machines[i] | machines[j]
  reason = ""
  if is_missing(table.loc[j, "seconds_mean"]):
    reason = "none has no timed run"
  elif len(both) > 1:
    reason = f"timed on other machines than none ({'; '.join(sorted(both))})"
  if reason:
    return np.nan, "; ".join(n for n in (note, f"overhead left out: {reason}") if n)
  return 100 * (row["seconds_mean"] / table.loc[j, "seconds_mean"] - 1), note


def mean_curves(metrics: list[pd.DataFrame], columns=("train_accuracy", "test_accuracy")):
  """Per-epoch mean over runs' metrics frames of ``columns`` (percent), with ``n`` runs."""
  frames = [f for f in metrics if len(f)]
  if not frames:
    return pd.DataFrame(columns=["epoch", "n", *columns])
  stacked = pd.concat(frames)
  curves = stacked.groupby("epoch")[list(columns)].mean() * 100
  curves.insert(0, "n", stacked.groupby("epoch").size())
  return curves.reset_index()


def selection_table(layer_stats: pd.DataFrame) -> pd.DataFrame:
  """Layers × selection epochs of one run: 1 where the layer was selected."""
  return selection_frequency([layer_stats]).astype(int)


def selection_frequency(layer_stats: list[pd.DataFrame]) -> pd.DataFrame:
  """Layers (network order) × selection events: the fraction of runs that selected it."""
  frames = [s for s in layer_stats if len(s)]
  if not frames:
    return pd.DataFrame()
  order = list(dict.fromkeys(frames[0]["layer"]))
  stacked = pd.concat(frames)
  table = stacked.pivot_table(index="layer", columns="epoch", values="selected", aggfunc="mean")
  return table.reindex(order)


def selected_counts(layer_stats: pd.DataFrame) -> pd.DataFrame:
  """Per selection event: ``selected``, ``eligible`` and, for ``matched_random``,
  ``by_measure`` and ``overlap`` layer counts."""
  if layer_stats.empty:
    return pd.DataFrame(columns=["epoch", "selected", "eligible"])
  stats = layer_stats.assign(selected=layer_stats["selected"].astype(bool))
  columns = ["selected", "eligible"]
  if "selected_by_measure" in stats:
    by = stats["selected_by_measure"].fillna(False).astype(bool)
    stats = stats.assign(by_measure=by, overlap=by & stats["selected"])
    columns += ["by_measure", "overlap"]
  return stats.groupby("epoch", sort=True)[columns].sum().astype(int).reset_index()


def directionality_table(directionality: list[pd.DataFrame], measure: str) -> pd.DataFrame:
  """Layers (network order) × epochs of tracked ``measure``, mean over the runs' frames."""
  frames = [d for d in directionality if len(d)]
  missing = [i for i, d in enumerate(frames) if measure not in d]
  if missing:
    raise ValueError(
      f"measure={measure!r} is not recorded in frame(s) {missing}; recorded: "
      f"{', '.join(measure_columns(frames[missing[0]]))}"
    )
  if not frames:
    return pd.DataFrame()
  by = dict(index=["index", "layer"], columns="epoch", values=measure, aggfunc="mean")
  return pd.concat(frames).pivot_table(**by).sort_index(level="index").droplevel("index")


def _select(values: np.ndarray, case: int, threshold: float) -> np.ndarray:
  """The layers picked from ``values`` by the selection's own z-score (eqs. 6, 8) and rule."""
  everyone = np.ones(len(values), bool)
  z = measures.normalize(values, everyone)
  return np.asarray(measures.select_layers(z, everyone, case=case, threshold=threshold))


def measure_agreement(
  directionality: pd.DataFrame,
  case: int = 1,
  threshold: float = 1.0,
  first: str = "G",
  second: str = "G_prime",
) -> pd.DataFrame:
  """Per epoch of one run, how far two measures agree over the eligible layers: ``spearman``,
  the layers each would select (``selected_<first>``, ``selected_<second>``) and ``both``."""
  measures.check_case(case)
  columns = ["epoch", "layers", "spearman", f"selected_{first}", f"selected_{second}", "both"]
  if directionality.empty:
    directionality = pd.DataFrame(columns=["epoch", "eligible", first, second])
  eligible = directionality[directionality["eligible"].astype(bool)]
  rows = []
  for epoch, frame in eligible.groupby("epoch", sort=True):
    a, b = (_select(frame[m].to_numpy(), case, threshold) for m in (first, second))
    rho = scipy_stats.spearmanr(frame[first], frame[second]).statistic if len(frame) > 1 else np.nan
    counts = (int(a.sum()), int(b.sum()), int((a & b).sum()))
    rows.append(dict(zip(columns, (epoch, len(frame), float(rho), *counts))))
  return pd.DataFrame(rows, columns=columns)


def selection_sizes(runs: pd.DataFrame, layer_stats: dict) -> pd.DataFrame:
  """Layers selected per event of the finished ``intelligent`` runs, per group (``n``, mean,
  std over runs, ``eligible``), from ``layer_stats`` frames by workdir."""
  done = runs[runs["finished"] & (runs["method"] == "intelligent")]
  rows = []
  for keys, group in done.groupby(list(GROUP_KEYS), dropna=False, sort=False):
    counts = [selected_counts(layer_stats[w]) for w in group["workdir"] if w in layer_stats]
    counts = [c for c in counts if len(c)]
    if counts:
      per_run = [c["selected"].mean() for c in counts]
      mean, std = float(np.mean(per_run)), sample_std(per_run)
      row = dict(zip(GROUP_KEYS, keys), n=len(per_run), selected_mean=mean, selected_std=std)
      rows.append(dict(row, eligible=max(int(c["eligible"].max()) for c in counts)))
  columns = list(GROUP_KEYS) + ["n", "selected_mean", "selected_std", "eligible"]
  return _sorted(typed_frame(pd.DataFrame(rows, columns=columns)))
