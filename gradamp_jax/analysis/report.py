"""Tables and figures of every run under a folder.

    python -m gradamp_jax.report ROOT --out DIR

Reads every run folder under ROOT at any depth and writes into DIR ``runs.csv``,
``summary.csv``, ``comparison.csv``, ``epoch_times.csv``, ``report.md`` (shaped like the
paper's Tables 1–4) and PNG figures (docs/sweeps.md). Accuracies are in percent everywhere.
"""

from __future__ import annotations

import argparse
import os
import sys

import pandas as pd

from gradamp_jax.analysis import figures, statistics
from gradamp_jax.analysis.labels import family_label, reselection_label, setting_text
from gradamp_jax.analysis.runs import group_conflicts, is_missing, load_runs


def _fmt(value, digits: int = 2) -> str:
  return "" if is_missing(value) else f"{value:.{digits}f}"


def markdown_table(frame: pd.DataFrame) -> str:
  """A DataFrame as a GitHub markdown table (cells as given, NaN/None blank)."""
  if frame.empty:
    return "(nothing to show)"
  cells = frame.astype(object).where(frame.notna(), "")
  lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
  lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in cells.to_numpy()]
  return "\n".join(lines)


def _mean_std(mean, std, n, note: str = "") -> str:
  """``mean ± std{note} (n=…)``; empty without a mean, no spread without a std."""
  if is_missing(mean):
    return ""
  spread = f" ± {std:.2f}" if not is_missing(std) else ""
  return f"{mean:.2f}{spread}{note} (n={int(n)})"


def _test(row) -> str:
  """:func:`_mean_std` of a row's test accuracy; empty without a row."""
  return "" if row is None else _mean_std(row["test_mean"], row["test_std"], row["n"])


def _cell(row) -> str:
  """``mean ± std (n), t=…`` for the paper-shaped tables."""
  setting = setting_text(row)
  return f"{_test(row)}, {setting}" if setting else _test(row)


def _diff(row) -> str:
  if is_missing(row["diff_mean"]):
    return ""
  text = f"{row['diff_mean']:+.2f}"
  if not is_missing(row["diff_ci_low"]):
    text += f" [{row['diff_ci_low']:+.2f}, {row['diff_ci_high']:+.2f}]"
  return text


def paper_tables(comparison: pd.DataFrame) -> str:
  """Markdown shaped like the paper's Tables 3–4: per dataset, models as rows and
  families as columns, at the chosen thresholds; then the paper's best-of."""
  parts = []
  amplified = comparison[comparison["method"] != "none"]
  for dataset, table in amplified.groupby("dataset", sort=True):
    labels = list(dict.fromkeys(family_label(r) for _, r in table.iterrows()))
    chosen, best = [], []
    for (model, optimizer, reselect), rows in table.groupby(
      ["model", "optimizer", "reselect_every"], sort=True
    ):
      base = dict(model=model, optimizer=optimizer, reselection=reselection_label(reselect))
      base["none"] = _test(statistics.none_row(comparison, model, dataset, optimizer))
      cells = {family_label(r): r for _, r in rows.iterrows()}
      for out, cell in ((chosen, _cell), (best, lambda r: _fmt(r["paper_best"]))):
        out.append(dict(base, **{k: cell(cells[k]) if k in cells else "" for k in labels}))
    parts.append(
      f"### {dataset}: mean ± std over seeds at the chosen setting\n\n"
      + markdown_table(pd.DataFrame(chosen))
    )
    parts.append(
      f"### {dataset}: best single run over all settings and seeds (the "
      "paper's protocol; optimistic, chosen on test)\n\n" + markdown_table(pd.DataFrame(best))
    )
  return "\n\n".join(parts)


def difference_table(comparison: pd.DataFrame) -> str:
  """Markdown: every family's chosen threshold, test accuracy and paired difference."""
  rows = []
  for _, r in comparison[comparison["method"] != "none"].iterrows():
    chosen = "" if is_missing(r["chosen_by"]) else f"{setting_text(r)} ({r['chosen_by']})"
    rows.append(
      {
        **{k: r[k] for k in ("model", "dataset", "optimizer")},
        "reselection": reselection_label(r["reselect_every"]),
        "family": family_label(r),
        "setting (chosen by)": chosen,
        "test %": _test(r),
        "Δ vs none [95 % CI]": _diff(r),
        "best run %": _fmt(r["paper_best"]),
      }
    )
  return markdown_table(pd.DataFrame(rows))


_CHOICE_TEXT = (
  "Accuracy is the test accuracy (%) after a run's last epoch. Each number is a mean over the "
  "runs that differ only in seed, ± the sample standard deviation (ddof=1, omitted for one "
  "run), with the number of seeds n. Each amplified family (method, action, measure, case, "
  "re-selection) is reported at one setting (its threshold, a random selection's ratio, the "
  "action's parameters, where its runs have several): with a validation split in every run of "
  "the family, the setting with the highest mean validation accuracy (ties to the smaller, "
  "`chosen_by = validation`); otherwise the one with the highest mean test accuracy "
  "(`chosen_by = test`, the paper's protocol: optimistic). `matched_random` (as many random "
  "layers as the measure chose) is reported at the threshold chosen for the intelligent family "
  "with the same measure and case. Δ is the mean difference to `none` over the seeds both have "
  "(same seed: same initialisation and data order), with a 95 % Student-t interval for at "
  "least two pairs."
)

_TIME_TEXT = (
  "Mean seconds per epoch of each run (training and evaluation) over the epochs it trained "
  "itself, less the first after each start (compilation and warm-up), mean ± std over runs "
  "of all thresholds; overhead in percent against `none` on the same model and dataset, "
  "only where both were timed on one machine. Epochs a fork or a branched member copied "
  "are its parent's and are not counted."
)


def time_tables(times: pd.DataFrame) -> str:
  """Markdown shaped like the paper's Tables 1–2: seconds per epoch and overhead against
  ``none``; a cell left out, or without its overhead, is explained below its table."""
  parts = []
  for dataset, table in times.groupby("dataset", sort=True):
    labels = list(dict.fromkeys(family_label(r) for _, r in table.iterrows()))
    rows, notes = [], []
    for (model, optimizer), group in table.groupby(["model", "optimizer"], sort=True):
      cells = {family_label(r): r for _, r in group.iterrows()}
      row = dict(model=model, optimizer=optimizer)
      for label in labels:
        r = cells.get(label)
        if r is not None and r["note"]:
          notes.append(f"{model}, {optimizer}, {label}: {r['note']}")
        if r is None or is_missing(r["seconds_mean"]):
          row[label] = "—" if r is not None else ""
          continue
        overhead = label != "none" and not is_missing(r["overhead_percent"])
        note = f" ({r['overhead_percent']:+.1f} %)" if overhead else ""
        row[label] = _mean_std(r["seconds_mean"], r["seconds_std"], r["n"], note)
      rows.append(row)
    text = f"### {dataset}: seconds per epoch (overhead against none)\n\n"
    text += markdown_table(pd.DataFrame(rows))
    if notes:
      text += "\n\nLeft out (—), or without an overhead:\n\n" + "\n".join(f"- {n}" for n in notes)
    parts.append(text)
  return "\n\n".join(parts)


def iter_figures(runs, summary, comparison):
  """Yields ``(file name, matplotlib figure)`` for every figure of the report."""
  for model, dataset, reselect, optimizer in figures.settings(comparison):
    tag = f"{model}_{dataset}_reselect{reselect}" + _optimizer_tag(optimizer)
    setting = (model, dataset, reselect, optimizer)
    yield f"threshold_{tag}.png", figures.threshold_figure(summary, *setting)
    yield f"selected_layers_{tag}.png", figures.selection_sizes_figure(runs, *setting)
    yield f"curves_{tag}.png", figures.curves_figure(runs, comparison, *setting)
    yield f"selection_{tag}.png", figures.selection_figure(runs, comparison, *setting)
  origins = zip(comparison["model"], comparison["dataset"], comparison["optimizer"])
  for model, dataset, optimizer in sorted(set(origins)):
    name = f"directionality_{model}_{dataset}{_optimizer_tag(optimizer)}.png"
    yield name, figures.original_directionality_figure(runs, comparison, model, dataset, optimizer)


def _optimizer_tag(optimizer) -> str:
  return "" if optimizer == "sgd" else f"_{optimizer}"


def draw_figures(runs, summary, comparison, out: str) -> list[str]:
  """Writes the figures of :func:`iter_figures` as PNG into ``out``; returns their names."""
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  written = []
  for name, fig in iter_figures(runs, summary, comparison):
    if fig is not None:
      if fig.get_layout_engine() is None:  # the heatmaps lay themselves out
        fig.tight_layout()
      fig.savefig(os.path.join(out, name), dpi=110)
      plt.close(fig)
      written.append(name)
  return written


def write_report(root: str, out: str, log=print) -> dict:
  """Writes every table, figure and ``report.md`` of the runs under ``root`` into ``out``.

  Raises:
    ValueError: ``root`` is not a folder or holds no run folder.
  """
  runs = load_runs(root)
  if runs.empty:
    raise ValueError(
      f"ROOT {root!r}: no run folder (one holding config.json and metrics.jsonl) at any depth"
    )
  finished = int(runs["finished"].sum())
  log(f"read {len(runs)} runs under {root}: {finished} finished, {len(runs) - finished} unfinished")
  os.makedirs(out, exist_ok=True)
  tables = dict(runs=runs, summary=statistics.summarize(runs), comparison=statistics.compare(runs))
  tables["epoch_times"] = statistics.epoch_times(runs)
  tables["matched"] = statistics.against_matched(runs)
  for name, table in tables.items():
    path = os.path.join(out, f"{name}.csv")
    table.to_csv(path, index=False, float_format="%.6g")
    log(f"wrote {path} ({len(table)} rows)")
  pngs = draw_figures(runs, tables["summary"], tables["comparison"], out)
  log(f"wrote {len(pngs)} figures into {out}")
  with open(os.path.join(out, "report.md"), "w") as f:
    f.write(report_markdown(root, tables, pngs))
  log(f"wrote {os.path.join(out, 'report.md')}")
  return tables


def runs_sentence(total: int, unfinished: int) -> str:
  """The report's first line: how many runs it read and which of them it leaves out."""
  runs = f"{total} run" + ("" if total == 1 else "s")
  if not unfinished:
    return f"{runs}, all finished." if total > 1 else f"{runs}, finished."
  left_out = (
    f"{unfinished} unfinished run (listed below and in `runs.csv`) is"
    if unfinished == 1
    else f"{unfinished} unfinished runs (listed below and in `runs.csv`) are"
  )
  return f"{runs}, {total - unfinished} finished. {left_out} left out of every statistic."


def matched_table(matched) -> str:
  """Intelligent − matched random at each threshold (``matched.csv``), as markdown."""
  rows = [
    {
      "family": family_label(row),
      "threshold": f"{row['threshold']:g}",
      "n": int(row["n"]),
      "intelligent − matched [95 % CI]": _diff(row),
    }
    for _, row in matched.iterrows()
  ]
  return markdown_table(pd.DataFrame(rows))


def report_markdown(root: str, tables: dict, pngs: list[str]) -> str:
  """``report.md`` of :func:`write_report`'s ``tables`` and figures ``pngs``."""
  runs, comparison = tables["runs"], tables["comparison"]
  unfinished = runs[~runs["finished"]]
  by = comparison["chosen_by"].dropna().unique().tolist()
  parts = [f"# Results of the runs under `{root}`", runs_sentence(len(runs), len(unfinished))]
  parts.append(_CHOICE_TEXT)
  if by:
    parts.append(f"Thresholds here were chosen on: {', '.join(sorted(by))}.")
  problems = group_conflicts(runs)
  if problems:
    parts.append("**Check these groups** (their runs are pooled as seeds of one configuration):")
    parts.append("\n".join(f"- {p}" for p in problems))
  parts += ["## Test accuracy (Tables 3–4)", paper_tables(comparison)]
  parts += ["## Differences to the original model, paired by seed", difference_table(comparison)]
  matched = tables.get("matched")
  if matched is not None and len(matched):
    parts += ["## Intelligent against matched random, paired by seed", matched_table(matched)]
  parts += ["## Time per epoch (Tables 1–2)", _TIME_TEXT, time_tables(tables["epoch_times"])]
  if len(unfinished):
    parts += [
      "## Unfinished runs",
      markdown_table(unfinished[["workdir", "method", "seed", "epochs"]]),
    ]
  parts.append("## Figures")
  return "\n\n".join(parts) + "\n\n" + "".join(f"![{name}]({name})\n" for name in pngs)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
    prog="python -m gradamp_jax.report",
    description="Tables (CSV, markdown) and figures of every run folder under ROOT.",
  )
  parser.add_argument("root", metavar="ROOT", help="folder holding run folders, any depth")
  parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
  args = parser.parse_args(argv)
  try:
    write_report(args.root, args.out)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
