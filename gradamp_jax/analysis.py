"""Reading runs into pandas and the paper's plots; the notebooks call only these.

A run's workdir holds ``config.json``, ``metrics.jsonl`` and ``layer_stats.jsonl``
(see :mod:`gradamp_jax.train`); a sweep's root holds ``sweep.json`` (``launch/sweep.py``).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd


def read_frame(path: str) -> pd.DataFrame:
  """A JSON-lines file as a DataFrame; empty when the file is missing or empty."""
  if not os.path.exists(path) or not os.path.getsize(path):
    return pd.DataFrame()
  return pd.read_json(path, lines=True)


def load_run(workdir: str) -> dict:
  """One run: ``config`` (dict), ``metrics`` and ``layer_stats`` (DataFrames)."""
  with open(os.path.join(workdir, "config.json")) as f:
    config = json.load(f)
  return dict(config=config, metrics=read_frame(os.path.join(workdir, "metrics.jsonl")),
              layer_stats=read_frame(os.path.join(workdir, "layer_stats.jsonl")))


def run_summary(metrics: pd.DataFrame) -> dict:
  """Final and best test accuracy (%), epochs done and training time of one run."""
  if metrics.empty:
    return dict(epochs=0, final_accuracy=np.nan, best_accuracy=np.nan, minutes=np.nan)
  return dict(epochs=int(metrics["epoch"].max()),
              final_accuracy=100 * float(metrics["test_accuracy"].iloc[-1]),
              best_accuracy=100 * float(metrics["test_accuracy"].max()),
              minutes=float(metrics["epoch_seconds"].sum()) / 60)


def load_sweep(root: str) -> pd.DataFrame:
  """One row per run of a sweep: its arguments plus :func:`run_summary` columns.

  Runs that have not started yet are kept with NaN results, so a partial sweep can be
  looked at while it runs.
  """
  with open(os.path.join(root, "sweep.json")) as f:
    sweep = json.load(f)
  rows = []
  for run in sweep["runs"]:
    path = os.path.join(run["workdir"], "metrics.jsonl")
    metrics = read_frame(path)
    rows.append(dict(name=run["name"], workdir=run["workdir"], **run["args"],
                     **run_summary(metrics)))
  return pd.DataFrame(rows)


def summarize(runs: pd.DataFrame, by: list[str], value: str = "final_accuracy") -> pd.DataFrame:
  """Mean, sample std (ddof=1; NaN for a single seed), best and count of ``value`` for
  each group of ``by``: spread over seeds for every method."""
  done = runs.dropna(subset=[value])
  grouped = done.groupby(by, dropna=False)[value]
  return grouped.agg(mean="mean", std="std", best="max", runs="count").reset_index()


def plot_threshold_curves(runs: pd.DataFrame, ax=None, value: str = "final_accuracy"):
  """Test accuracy vs threshold per measure and case, against the un-amplified model's
  mean ± std band (the paper's Figs. 2–10, with spread over seeds)."""
  import matplotlib.pyplot as plt
  ax = ax or plt.gca()
  baseline = runs[runs["method"] == "none"][value].dropna()
  if len(baseline):
    mean, std = baseline.mean(), baseline.std(ddof=1) if len(baseline) > 1 else 0.0
    ax.axhspan(mean - std, mean + std, color="tab:blue", alpha=0.15)
    ax.axhline(mean, color="tab:blue", label=f"no amplification ({mean:.2f})")
  amplified = runs[runs["method"] == "intelligent"]
  if len(amplified):
    table = summarize(amplified, ["measure", "case", "threshold"], value)
    for (measure, case), group in table.groupby(["measure", "case"]):
      label = f"{'G′' if measure == 'G_prime' else 'G'} case {case}"
      ax.errorbar(group["threshold"], group["mean"], yerr=group["std"].fillna(0),
                  marker="o", capsize=2, label=label)
  ax.set_xlabel("threshold on the normalized measure")
  ax.set_ylabel(f"test accuracy (%), {value.split('_')[0]}")
  ax.legend(fontsize="small")
  return ax


def plot_training_curves(runs: dict[str, pd.DataFrame], ax=None):
  """Train and test accuracy per epoch for named runs (the paper's Fig. 11)."""
  import matplotlib.pyplot as plt
  ax = ax or plt.gca()
  for name, metrics in runs.items():
    line, = ax.plot(metrics["epoch"], 100 * metrics["test_accuracy"], label=f"{name} test")
    ax.plot(metrics["epoch"], 100 * metrics["train_accuracy"], "--", color=line.get_color(),
            label=f"{name} train")
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (%)")
  ax.legend(fontsize="small")
  return ax


def selection_table(layer_stats: pd.DataFrame) -> pd.DataFrame:
  """Layers × selection epochs: 1 where the layer was amplified after that analysis."""
  if layer_stats.empty:
    return pd.DataFrame()
  return layer_stats.pivot_table(index="layer", columns="epoch", values="selected",
                                 aggfunc="max", sort=False).astype(int)
