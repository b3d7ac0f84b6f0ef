"""The report's figures, drawn from the tables of :mod:`gradamp_jax.analysis.statistics`.

``plot_*`` functions draw on a matplotlib ``ax`` (the current one by default) and return
it; ``*_figure`` functions build one whole figure of the report (or return None when the
runs hold nothing to draw).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from gradamp_jax import measures, run_folder
from gradamp_jax.analysis import labels, statistics
from gradamp_jax.analysis.runs import measure_columns, read_frames


def _axes(ax):
  import matplotlib.pyplot as plt

  return ax or plt.gca()


def plot_threshold_curves(summary: pd.DataFrame, ax=None):
  """Test accuracy vs threshold per measure and case, mean with error bars of the sample
  std over seeds, against the original model's mean ± std band (the paper's Figs. 2–10).
  Runs at one threshold only are drawn as one point per family, side by side
  (:func:`_threshold_positions`).

  Args:
    summary: rows of :func:`statistics.summarize` for one model, dataset and re-selection
      (plus that model's ``none`` row); ``matched_random`` is drawn dashed, ``random`` and
      ``all`` as dotted lines.
  """
  ax = _axes(ax)
  none = summary[summary["method"] == "none"]
  if len(none):
    mean, std = float(none["test_mean"].iloc[0]), np.nan_to_num(none["test_std"].iloc[0])
    n = int(none["n"].iloc[0])
    ax.axhspan(mean - std, mean + std, color="0.5", alpha=0.2)
    ax.axhline(mean, color="0.3", label=f"none ({mean:.2f}, n={n})")
  families = [
    (style, key, group.sort_values("threshold"))
    for method, style in (("intelligent", "-"), ("matched_random", "--"))
    for key, group in summary[summary["method"] == method].groupby(
      ["measure", "case", "where", "action"], dropna=False, sort=True
    )
  ]
  groups = [group for _, _, group in families]
  names = [labels.family_label(group.iloc[0]) for group in groups]
  apart = _one_threshold(groups)
  colors = {}
  for (style, key, group), name, x in zip(families, names, _threshold_positions(groups)):
    ax.errorbar(
      x,
      group["test_mean"],
      yerr=group["test_std"].astype(float).fillna(0),
      fmt="o" if apart else "o" + style,
      color=colors.setdefault(key, f"C{len(colors)}"),
      capsize=2,
      label=name,
      alpha=1.0 if style == "-" else 0.6,
    )
  for i, method in enumerate(("random", "all")):
    for _, row in summary[summary["method"] == method].iterrows():
      ax.axhline(
        row["test_mean"],
        color=f"C{6 + i}",
        linestyle=":",
        label=f"{labels.family_label(row)} ({row['test_mean']:.2f}, n={int(row['n'])})",
      )
  _threshold_axis(ax, groups, names)
  ax.set_ylabel("final test accuracy (%)")
  ax.legend(fontsize="small")
  return ax


def _one_threshold(groups: list[pd.DataFrame]) -> bool:
  """Whether the rows of ``groups`` (one per family) hold at most one threshold."""
  return bool(groups) and len(_thresholds(groups)) <= 1


def _thresholds(groups: list[pd.DataFrame]) -> np.ndarray:
  return pd.concat([g["threshold"] for g in groups]).dropna().unique()


def _threshold_positions(groups: list[pd.DataFrame]) -> list[np.ndarray]:
  """The x of each group's rows: their thresholds or, when all rows are at one threshold
  (or none: an action without one), the group's place, one beside the other."""
  if _one_threshold(groups):
    return [np.full(len(g), i, float) for i, g in enumerate(groups)]
  return [g["threshold"].to_numpy(float) for g in groups]


def _threshold_axis(ax, groups: list[pd.DataFrame], names: list[str]) -> None:
  """The x axis of :func:`_threshold_positions`: the threshold, or the families by name
  with the one threshold they were run at."""
  if not _one_threshold(groups):
    ax.set_xlabel("threshold on the normalized measure")
    return
  ax.set_xticks(range(len(groups)), names, rotation=20, horizontalalignment="right")
  ax.set_xlim(-0.5, len(groups) - 0.5)
  thresholds = _thresholds(groups)
  ax.set_xlabel(
    f"family (run at threshold {thresholds[0]:g} only)" if len(thresholds) else "family"
  )


# The training curves' markers, one per curve.
MARKERS = ("o", "s", "^", "v", "D", "P", "X", "<", ">", "*", "h")


def plot_training_curves(curves: dict[str, pd.DataFrame], ax=None):
  """Test (solid) and train (dashed) accuracy per epoch, mean over seeds, of named
  configurations (the paper's Fig. 11); ``curves`` maps a label to
  :func:`statistics.mean_curves`. Each configuration has a colour and a hollow marker of
  its own (:func:`_curve_style`), so that curves lying on one another all show, the first
  (``none`` in the report) on top; the epoch axis has integer ticks."""
  from matplotlib.ticker import MaxNLocator

  ax = _axes(ax)
  for i, (label, curve) in enumerate(curves.items()):
    n = int(curve["n"].min()) if len(curve) else 0
    style = _curve_style(i, len(curves), len(curve))
    ax.plot(curve["epoch"], curve["test_accuracy"], **style, label=f"{label} test (n={n})")
    ax.plot(curve["epoch"], curve["train_accuracy"], "--", **style, label=f"{label} train")
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("epoch")
  ax.set_ylabel("accuracy (%)")
  ax.legend(fontsize="x-small", ncol=2)
  return ax


def _curve_style(i: int, num_curves: int, num_epochs: int) -> dict:
  """Curve ``i`` of ``num_curves``: the ten default colours, then their light variants
  (tab20), a hollow marker (:data:`MARKERS`), at most ~15 markers a curve, offset from the
  neighbours' where there are fewer, and earlier curves drawn above later ones."""
  import matplotlib

  step = max(1, num_epochs // 15)
  return dict(
    color=matplotlib.colormaps["tab20"]((2 * i) % 20 + (i // 10) % 2),
    marker=MARKERS[i % len(MARKERS)],
    markerfacecolor="none",
    markevery=(i % step, step),
    zorder=3 - i / num_curves,
  )


def plot_layer_heatmap(
  table: pd.DataFrame,
  ax=None,
  label: str = "",
  vmin=None,
  vmax=None,
  cmap="viridis",
  colorbar: bool = True,
):
  """A layers × epochs table (network order top to bottom) as a heatmap: e.g.
  :func:`statistics.selection_frequency` or :func:`statistics.directionality_table`. Without
  ``colorbar`` the caller draws one (e.g. one for a row of panels on one scale)."""
  import matplotlib.pyplot as plt

  ax = _axes(ax)
  image = ax.imshow(
    table.to_numpy(float), aspect="auto", interpolation="nearest", vmin=vmin, vmax=vmax, cmap=cmap
  )
  epochs = list(table.columns)
  step = max(1, len(epochs) // 12)
  ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
  names = list(table.index)
  step = max(1, len(names) // 40)
  ax.set_yticks(range(0, len(names), step), names[::step], fontsize="x-small")
  ax.set_xlabel("epoch")
  if colorbar:
    plt.colorbar(image, ax=ax, label=label)
  return ax


MAX_COLUMNS = 3  # heatmap panels per row of a figure


def _heatmap_grid(num_panels: int, num_layers: int):
  """A figure of ``num_panels`` layers × epochs panels, at most :data:`MAX_COLUMNS` a row,
  layer names on the first column only; returns ``(figure, axes in reading order)``."""
  import matplotlib.pyplot as plt

  columns = min(num_panels, MAX_COLUMNS)
  rows = -(-num_panels // columns)
  height = max(2.5, 0.12 * num_layers + 1.2)
  fig, axes = plt.subplots(
    rows,
    columns,
    figsize=(3.0 * columns + 2.2, height * rows + 0.4),
    squeeze=False,
    layout="constrained",
  )
  for ax in axes.ravel()[num_panels:]:
    ax.set_visible(False)
  return fig, list(axes.ravel()[:num_panels])


def _only_first_column_names(axes) -> None:
  for i, ax in enumerate(axes):
    if i % MAX_COLUMNS:
      ax.tick_params(labelleft=False)


def plot_selection_sizes(sizes: pd.DataFrame, ax=None):
  """Mean number of selected layers per selection event vs threshold, per measure and
  case, error bars over seeds (at one threshold only: one point per family, side by side);
  ``sizes`` from :func:`statistics.selection_sizes`."""
  ax = _axes(ax)
  groups = [
    group.sort_values("threshold")
    for _, group in sizes.groupby(["measure", "case", "where", "action"], dropna=False, sort=True)
  ]
  names = [labels.family_label(group.iloc[0]) for group in groups]
  for group, name, x in zip(groups, names, _threshold_positions(groups)):
    ax.errorbar(
      x,
      group["selected_mean"],
      yerr=group["selected_std"].astype(float).fillna(0),
      marker="o",
      capsize=2,
      label=name,
    )
  if len(sizes):
    ax.axhline(sizes["eligible"].max(), color="0.5", linestyle=":", label="eligible layers")
  _threshold_axis(ax, groups, names)
  ax.set_ylabel("layers selected per selection")
  ax.legend(fontsize="small")
  return ax


def plot_zscores(layer_stats: pd.DataFrame, epoch: int, threshold: float, case: int, ax=None):
  """The normalized measure of every layer at one selection (bars; selected layers
  highlighted) with the threshold line(s): ``z > t`` for case 1, ``|z| > t`` for case 2."""
  ax = _axes(ax)
  rows = layer_stats[layer_stats["epoch"] == epoch]
  colors = np.where(rows["selected"].astype(bool), "C3", "C0")
  ax.bar(range(len(rows)), rows["normalized"].astype(float), color=colors)
  ax.axhline(threshold, color="k", linestyle="--", linewidth=1)
  if case == 2:
    ax.axhline(-threshold, color="k", linestyle="--", linewidth=1)
  ax.set_xticks(range(len(rows)), list(rows["layer"]), rotation=90, fontsize="x-small")
  ax.set_ylabel("normalized measure (z)")
  ax.set_title(f"selection after epoch {epoch} (red: amplified)")
  return ax


def plot_measure_scatter(
  directionality: pd.DataFrame, epoch: int, ax=None, x: str = "G", y: str = "G_prime"
):
  """Measure ``y`` against ``x`` (G′ against G by default) of every eligible layer at one
  epoch, coloured by depth."""
  import matplotlib.pyplot as plt

  ax = _axes(ax)
  rows = directionality[
    (directionality["epoch"] == epoch) & directionality["eligible"].astype(bool)
  ]
  points = ax.scatter(rows[x], rows[y], c=rows["index"], cmap="viridis", s=18)
  ax.set_xlabel(measures.axis_label(x))
  ax.set_ylabel(measures.axis_label(y))
  ax.set_title(f"epoch {epoch}")
  plt.colorbar(points, ax=ax, label="layer index (network order)")
  return ax


# ----------------------------------------------------------------------------- figures


def settings(comparison: pd.DataFrame) -> list[tuple]:
  """The (model, dataset, reselect_every, optimizer) of the amplified rows of
  :func:`statistics.compare`: one set of figures each."""
  amplified = comparison[comparison["method"] != "none"]
  return sorted(
    {
      (r["model"], r["dataset"], int(r["reselect_every"]), r["optimizer"])
      for _, r in amplified.iterrows()
    }
  )


def _setting(model, dataset, optimizer) -> str:
  """``model, dataset``, and the optimizer when it is not the paper's SGD."""
  return f"{model}, {dataset}" + ("" if optimizer == "sgd" else f", {optimizer}")


def _title(model, dataset, reselect, optimizer) -> str:
  setting = _setting(model, dataset, optimizer)
  return f"{setting}, re-selection {labels.reselection_label(reselect)}"


def _in_setting(frame, model, dataset, reselect, optimizer, with_none=True):
  keep = (
    (frame["model"] == model) & (frame["dataset"] == dataset) & (frame["optimizer"] == optimizer)
  )
  same = frame["reselect_every"].eq(reselect).fillna(False).astype(bool)
  return frame[keep & (same | ((frame["method"] == "none") & with_none))]


def _label(row) -> str:
  setting = labels.setting_text(row)
  return f"{labels.family_label(row)} {setting}" if setting else labels.family_label(row)


def _chosen_frames(runs, row, name: str):
  """File ``name`` of each run behind a row of :func:`statistics.compare` (those with
  rows)."""
  return read_frames(statistics.chosen_runs(runs, row)["workdir"], name).values()


def threshold_figure(summary, model, dataset, reselect, optimizer="sgd"):
  """Figs. 2–10 for one setting, or None without ``intelligent`` runs."""
  import matplotlib.pyplot as plt

  subset = _in_setting(summary, model, dataset, reselect, optimizer)
  if not (subset["method"] == "intelligent").any():
    return None
  fig, ax = plt.subplots(figsize=(7, 4.5))
  plot_threshold_curves(subset, ax=ax)
  ax.set_title(_title(model, dataset, reselect, optimizer))
  return fig


def selection_sizes_figure(runs, model, dataset, reselect, optimizer="sgd"):
  """Layers selected vs threshold for one setting, or None without selections."""
  import matplotlib.pyplot as plt

  subset = _in_setting(runs, model, dataset, reselect, optimizer, False)
  sizes = statistics.selection_sizes(subset, read_frames(subset["workdir"], run_folder.LAYER_STATS))
  if sizes.empty:
    return None
  fig, ax = plt.subplots(figsize=(7, 4))
  plot_selection_sizes(sizes, ax=ax)
  ax.set_title(_title(model, dataset, reselect, optimizer))
  return fig


def curves_figure(runs, comparison, model, dataset, reselect, optimizer="sgd"):
  """Fig. 11: the chosen configuration of every family and ``none``, mean over seeds."""
  import matplotlib.pyplot as plt

  curves = {
    _label(row): statistics.mean_curves(list(_chosen_frames(runs, row, run_folder.METRICS)))
    for _, row in _in_setting(comparison, model, dataset, reselect, optimizer).iterrows()
  }
  fig, ax = plt.subplots(figsize=(8, 5))
  plot_training_curves(curves, ax=ax)
  ax.set_title(
    f"{_title(model, dataset, reselect, optimizer)}: chosen configurations, mean over seeds",
    fontsize="small",
  )
  return fig


def selection_figure(runs, comparison, model, dataset, reselect, optimizer="sgd"):
  """How often each layer was selected at each selection event, over the seeds of each
  family's chosen configuration; None without layer statistics."""

  rows = _in_setting(comparison, model, dataset, reselect, optimizer, False)
  panels = []
  for _, row in rows[rows["method"].isin(["intelligent", "matched_random", "random"])].iterrows():
    stats = list(_chosen_frames(runs, row, run_folder.LAYER_STATS))
    if stats:
      panels.append((_label(row), statistics.selection_frequency(stats), len(stats)))
  if not panels:
    return None
  fig, axes = _heatmap_grid(len(panels), max(len(t) for _, t, _ in panels))
  for ax, (label, table, n) in zip(axes, panels):
    plot_layer_heatmap(table, ax=ax, vmin=0, vmax=1, colorbar=False)
    ax.set_title(f"{label} (n={n})", fontsize="small")
  _only_first_column_names(axes)
  fig.colorbar(axes[0].images[0], ax=axes, label="fraction of runs", shrink=0.6, aspect=30)
  fig.suptitle(
    f"{_title(model, dataset, reselect, optimizer)}: layers selected at each selection",
    fontsize="small",
  )
  return fig


def directionality_figure(frames: list[pd.DataFrame], title: str):
  """Every recorded measure (G and G′ by default) of every layer (network order) over
  epochs, mean over the given runs' ``directionality.jsonl`` frames; None when there are
  none. Measures with the same bounds (G and G′: [0, 1]) share one colour scale, from the
  low bound to the largest value drawn, so that small values stay distinguishable; an
  unbounded measure gets a scale of its own."""
  frames = [f for f in frames if len(f)]
  if not frames:
    return None
  names = [m for m in measure_columns(frames[0]) if all(m in f for f in frames)]
  tables = {m: statistics.directionality_table(frames, m) for m in names}
  scales = _shared_scales(tables)
  fig, axes = _heatmap_grid(len(names), len(tables[names[0]]))
  for ax, (measure, table) in zip(axes, tables.items()):
    name = measures.axis_label(measure)
    plot_layer_heatmap(table, ax=ax, label=name, vmin=scales[measure][0], vmax=scales[measure][1])
    ax.set_title(name, fontsize="small")
  _only_first_column_names(axes)
  fig.suptitle(f"{title} (mean over {len(frames)} runs)", fontsize="small")
  return fig


def _shared_scales(tables: dict) -> dict:
  """Measure name -> ``(vmin, vmax)``: one scale per set of bounds, ``(None, None)`` (the
  data's own) for unbounded measures."""
  top = {}
  for measure, table in tables.items():
    bounds = measures.bounds(measure)
    if bounds is not None:
      values = table.to_numpy(float)
      largest = float(np.nanmax(values)) if np.isfinite(values).any() else bounds[1]
      top[bounds] = max(top.get(bounds, bounds[0]), min(largest, bounds[1]))
  scales = {}
  for measure in tables:
    bounds = measures.bounds(measure)
    high = top.get(bounds)
    usable = bounds is not None and high is not None and high > bounds[0]
    scales[measure] = (bounds[0], high) if usable else (None, None)
  return scales


def original_directionality_figure(runs, comparison, model, dataset, optimizer="sgd"):
  """:func:`directionality_figure` of the ``none`` runs of one model, dataset and optimizer."""
  none = statistics.none_row(comparison, model, dataset, optimizer)
  if none is None:
    return None
  frames = list(_chosen_frames(runs, none, run_folder.DIRECTIONALITY))
  setting = _setting(model, dataset, optimizer)
  return directionality_figure(frames, f"{setting}, none")


def zscore_figures(layer_stats: pd.DataFrame, threshold: float, case: int) -> list:
  """One :func:`plot_zscores` figure per selection of a run with a measure (none for
  runs without normalized values, e.g. ``random``)."""
  import matplotlib.pyplot as plt

  if layer_stats.empty or layer_stats["normalized"].isna().any():
    return []
  out = []
  for epoch in sorted(layer_stats["epoch"].unique()):
    width = max(6.0, 0.25 * int((layer_stats["epoch"] == epoch).sum()))
    fig, ax = plt.subplots(figsize=(width, 3.5))
    plot_zscores(layer_stats, epoch, threshold, case, ax=ax)
    fig.tight_layout()
    out.append(fig)
  return out
