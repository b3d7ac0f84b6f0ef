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


def _pyplot():
  import matplotlib.pyplot as plt  # when first drawing: the report sets its backend first

  return plt


def _axes(ax):
  return ax or _pyplot().gca()


def _families(frame: pd.DataFrame) -> list[tuple]:
  """``(key, rows sorted by threshold)`` of each family: measure, case, placement, action."""
  by = frame.groupby(["measure", "case", "where", "action"], dropna=False, sort=True)
  return [(key, group.sort_values("threshold")) for key, group in by]


def _n_text(group: pd.DataFrame) -> str:
  """``n=5`` when every point of a family has 5 runs, ``n=3–5`` when they differ."""
  counts = group["n"].astype(int)
  low, high = counts.min(), counts.max()
  return f"n={low}" if low == high else f"n={low}–{high}"


def _plot_families(ax, groups: list[pd.DataFrame], column: str, style) -> None:
  """Each family's ``{column}_mean`` ± ``_std`` at its thresholds, nudged apart."""
  names = [labels.family_label(group.iloc[0]) for group in groups]
  thresholds = pd.concat([g["threshold"] for g in groups]).dropna().unique() if groups else []
  apart = bool(groups) and len(thresholds) <= 1
  for i, (group, name) in enumerate(zip(groups, names)):
    dodge = 0 if apart else 0.012 * np.ptp(thresholds) * (i - (len(groups) - 1) / 2)
    x = np.full(len(group), i, float) if apart else group["threshold"].to_numpy(float) + dodge
    y = group[f"{column}_mean"].to_numpy(float)
    yerr = group[f"{column}_std"].astype(float).fillna(0)
    ax.errorbar(x, y, yerr=yerr, capsize=2, label=f"{name} ({_n_text(group)})", **style(i, apart))
    for xi, yi, n in zip(x, y, group["n"].astype(int)):
      if n != group["n"].max():
        ax.annotate(f"n={n}", (xi, yi), xytext=(4, -10), textcoords="offset points", fontsize=7)
  if not apart:
    ax.set_xlabel("threshold on the normalized measure")
    ax.set_xticks(sorted(thresholds))
    return
  ax.set_xticks(range(len(groups)), names, rotation=20, horizontalalignment="right")
  ax.set_xlim(-0.5, len(groups) - 0.5)
  ax.set_xlabel(
    f"family (run at threshold {thresholds[0]:g} only)" if len(thresholds) else "family"
  )


def _legend_outside(ax) -> None:
  """The legend to the right of the axes, clear of the data."""
  ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0)


def plot_threshold_curves(summary: pd.DataFrame, ax=None):
  """Test accuracy vs threshold per measure and case, mean with error bars of the sample
  std over seeds, against the original model's mean ± std band (the paper's Figs. 3–10).
  Runs at one threshold only are drawn as one point per family, side by side.

  Args:
    summary: rows of :func:`statistics.summarize` for one model, dataset and re-selection
      (plus that model's ``none`` row); ``matched_random`` is drawn dashed in its
      intelligent family's colour, ``random`` and ``all`` as dotted lines; every label
      gives the runs per point (``n``).
  """
  ax = _axes(ax)
  none = summary[summary["method"] == "none"]
  if len(none):
    mean, std = float(none["test_mean"].iloc[0]), np.nan_to_num(none["test_std"].iloc[0])
    ax.axhspan(mean - std, mean + std, color="0.5", alpha=0.2)
    label = f"none, mean ± std ({mean:.2f}, n={int(none['n'].iloc[0])})"
    ax.axhline(mean, color="0.3", label=label)
  families = [
    (line, key, group)
    for method, line in (("intelligent", "-"), ("matched_random", "--"))
    for key, group in _families(summary[summary["method"] == method])
  ]
  palette = {}
  colors = [palette.setdefault(key, f"C{len(palette)}") for _, key, _ in families]

  def style(i, apart):
    line = families[i][0]
    marker = "o" if line == "-" else "s"
    fmt = marker if apart else marker + line
    return dict(fmt=fmt, color=colors[i], alpha=1.0 if line == "-" else 0.7)

  _plot_families(ax, [group for _, _, group in families], "test", style)
  for i, method in enumerate(("random", "all")):
    for _, row in summary[summary["method"] == method].iterrows():
      label = f"{labels.family_label(row)} ({row['test_mean']:.2f}, n={int(row['n'])})"
      ax.axhline(row["test_mean"], color=f"C{6 + i}", linestyle=":", label=label)
  ax.set_ylabel("final test accuracy (%)")
  _legend_outside(ax)
  return ax


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
  """tab20's dark, then light colours; hollow markers (~15 a curve, offset); earlier on top."""
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
  table: pd.DataFrame, ax=None, label: str = "", vmin=None, vmax=None, cmap="viridis", colorbar=True
):
  """A layers × epochs table (network order top to bottom) as a heatmap: e.g.
  :func:`statistics.selection_frequency` or :func:`statistics.directionality_table`. Without
  ``colorbar`` the caller draws one (e.g. one for a row of panels on one scale)."""
  ax = _axes(ax)
  values = table.to_numpy(float)
  image = ax.imshow(values, aspect="auto", interpolation="nearest", vmin=vmin, vmax=vmax, cmap=cmap)
  epochs, names = list(table.columns), list(table.index)
  step = max(1, len(epochs) // 12)
  ax.set_xticks(range(0, len(epochs), step), [str(e) for e in epochs[::step]])
  step = max(1, len(names) // 40)
  ax.set_yticks(range(0, len(names), step), names[::step], fontsize="x-small")
  ax.set_xlabel("epoch")
  if colorbar:
    ax.figure.colorbar(image, ax=ax, label=label)
  return ax


MAX_COLUMNS = 3  # heatmap panels per row of a figure


def _heatmaps(panels: list[tuple], num_layers: int, title: str):
  """``(figure, axes)`` of heatmap panels ``(title, table, options)``, :data:`MAX_COLUMNS` a row."""
  columns = min(len(panels), MAX_COLUMNS)
  rows = -(-len(panels) // columns)
  size = (3.0 * columns + 2.2, max(2.5, 0.12 * num_layers + 1.2) * rows + 0.4)
  fig, axes = _pyplot().subplots(rows, columns, figsize=size, squeeze=False, layout="constrained")
  for ax in axes.ravel()[len(panels) :]:
    ax.set_visible(False)
  axes = list(axes.ravel()[: len(panels)])
  for i, (ax, (name, table, options)) in enumerate(zip(axes, panels)):
    plot_layer_heatmap(table, ax=ax, **options)
    ax.set_title(name, fontsize="small")
    ax.tick_params(labelleft=i % MAX_COLUMNS == 0)
  fig.suptitle(title, fontsize="small")
  return fig, axes


def plot_selection_sizes(sizes: pd.DataFrame, ax=None):
  """Mean number of selected layers per selection event vs threshold, per measure and
  case, error bars over seeds (at one threshold only: one point per family, side by side);
  ``sizes`` from :func:`statistics.selection_sizes`."""
  ax = _axes(ax)
  groups = [group for _, group in _families(sizes)]
  _plot_families(ax, groups, "selected", lambda i, apart: dict(marker="o"))
  if len(sizes):
    ax.axhline(sizes["eligible"].max(), color="0.5", linestyle=":", label="eligible layers")
  ax.set_ylabel("layers selected per selection")
  _legend_outside(ax)
  return ax


def plot_zscores(layer_stats: pd.DataFrame, epoch: int, threshold: float, case: int, ax=None):
  """The normalized measure of every layer at one selection (bars; selected layers
  highlighted) with the threshold line(s): ``z > t`` for case 1, ``|z| > t`` for case 2."""
  ax = _axes(ax)
  rows = layer_stats[layer_stats["epoch"] == epoch]
  colors = np.where(rows["selected"].astype(bool), "C3", "C0")
  ax.bar(range(len(rows)), rows["normalized"].astype(float), color=colors)
  for t in (threshold, -threshold) if case == 2 else (threshold,):
    ax.axhline(t, color="k", linestyle="--", linewidth=1)
  ax.set_xticks(range(len(rows)), list(rows["layer"]), rotation=90, fontsize="x-small")
  ax.set_ylabel("normalized measure (z)")
  ax.set_title(f"selection after epoch {epoch} (red: amplified)")
  return ax


def plot_measure_scatter(
  directionality: pd.DataFrame, epoch: int, ax=None, x: str = "G", y: str = "G_prime"
):
  """Measure ``y`` against ``x`` (G′ against G by default) of every eligible layer at one
  epoch, coloured by depth."""
  ax = _axes(ax)
  at = directionality["epoch"] == epoch
  rows = directionality[at & directionality["eligible"].astype(bool)]
  points = ax.scatter(rows[x], rows[y], c=rows["index"], cmap="viridis", s=18)
  ax.set_xlabel(measures.axis_label(x))
  ax.set_ylabel(measures.axis_label(y))
  ax.set_title(f"epoch {epoch}")
  ax.figure.colorbar(points, ax=ax, label="layer index (network order)")
  return ax


def settings(comparison: pd.DataFrame) -> list[tuple]:
  """The (model, dataset, reselect_every, optimizer) of the amplified rows of
  :func:`statistics.compare`: one set of figures each."""
  amplified = comparison[comparison["method"] != "none"]
  keys = amplified[["model", "dataset", "reselect_every", "optimizer"]].itertuples(index=False)
  return sorted({(model, dataset, int(reselect), opt) for model, dataset, reselect, opt in keys})


def _title(model, dataset, reselect, optimizer) -> str:
  """``model, dataset``, the optimizer unless the paper's SGD, the re-selection unless None."""
  title = f"{model}, {dataset}" + ("" if optimizer == "sgd" else f", {optimizer}")
  if reselect is None:
    return title
  return f"{title}, re-selection {labels.reselection_label(reselect)}"


def _in_setting(frame, model, dataset, reselect, optimizer, with_none=True):
  keep = (frame["model"] == model) & (frame["dataset"] == dataset)
  keep &= frame["optimizer"] == optimizer
  same = frame["reselect_every"].eq(reselect).fillna(False).astype(bool)
  return frame[keep & (same | ((frame["method"] == "none") & with_none))]


def _label(row) -> str:
  setting = labels.setting_text(row)
  return f"{labels.family_label(row)} {setting}" if setting else labels.family_label(row)


def _chosen_frames(runs, row, name: str):
  """File ``name`` of each run behind a row of :func:`statistics.compare` (those with rows)."""
  return read_frames(statistics.chosen_runs(runs, row)["workdir"], name).values()


def _figure(size, plot, table, title: str, **title_style):
  """A figure of one ``plot`` of ``table``, titled."""
  fig, ax = _pyplot().subplots(figsize=size)
  plot(table, ax=ax)
  ax.set_title(title, **title_style)
  return fig


def threshold_figure(summary, model, dataset, reselect, optimizer="sgd"):
  """Figs. 2–10 for one setting, or None without ``intelligent`` runs."""
  subset = _in_setting(summary, model, dataset, reselect, optimizer)
  if not (subset["method"] == "intelligent").any():
    return None
  title = _title(model, dataset, reselect, optimizer)
  return _figure((9, 4.5), plot_threshold_curves, subset, title)


def selection_sizes_figure(runs, model, dataset, reselect, optimizer="sgd"):
  """Layers selected vs threshold for one setting, or None without selections."""
  subset = _in_setting(runs, model, dataset, reselect, optimizer, False)
  sizes = statistics.selection_sizes(subset, read_frames(subset["workdir"], run_folder.LAYER_STATS))
  if sizes.empty:
    return None
  return _figure((9, 4), plot_selection_sizes, sizes, _title(model, dataset, reselect, optimizer))


def curves_figure(runs, comparison, model, dataset, reselect, optimizer="sgd"):
  """Fig. 11: the chosen configuration of every family and ``none``, mean over seeds."""
  curves = {
    _label(row): statistics.mean_curves(list(_chosen_frames(runs, row, run_folder.METRICS)))
    for _, row in _in_setting(comparison, model, dataset, reselect, optimizer).iterrows()
  }
  title = f"{_title(model, dataset, reselect, optimizer)}: chosen configurations, mean over seeds"
  return _figure((8, 5), plot_training_curves, curves, title, fontsize="small")


def selection_figure(runs, comparison, model, dataset, reselect, optimizer="sgd"):
  """How often each layer was selected at each selection event, over the seeds of each
  family's chosen configuration; None without layer statistics."""
  rows = _in_setting(comparison, model, dataset, reselect, optimizer, False)
  panels, options = [], dict(vmin=0, vmax=1, colorbar=False)
  for _, row in rows[rows["method"].isin(["intelligent", "matched_random", "random"])].iterrows():
    stats = list(_chosen_frames(runs, row, run_folder.LAYER_STATS))
    if stats:
      name = f"{_label(row)} (n={len(stats)})"
      panels.append((name, statistics.selection_frequency(stats), options))
  if not panels:
    return None
  title = f"{_title(model, dataset, reselect, optimizer)}: layers selected at each selection"
  fig, axes = _heatmaps(panels, max(len(t) for _, t, _ in panels), title)
  fig.colorbar(axes[0].images[0], ax=axes, label="fraction of runs", shrink=0.6, aspect=30)
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
  axis = {m: measures.axis_label(m) for m in tables}
  panels = [(axis[m], table, dict(label=axis[m], **scales[m])) for m, table in tables.items()]
  return _heatmaps(panels, len(tables[names[0]]), f"{title} (mean over {len(frames)} runs)")[0]


def _shared_scales(tables: dict) -> dict:
  """Measure -> its ``vmin`` and ``vmax``: one scale per set of bounds; none if unbounded."""
  bounds, top = {m: measures.bounds(m) for m in tables}, {}
  for measure, table in tables.items():
    b = bounds[measure]
    if b is not None:
      values = table.to_numpy(float)
      largest = float(np.nanmax(values)) if np.isfinite(values).any() else b[1]
      top[b] = max(top.get(b, b[0]), min(largest, b[1]))
  return {m: dict(vmin=b[0], vmax=top[b]) if b and top[b] > b[0] else {} for m, b in bounds.items()}


def original_directionality_figure(runs, comparison, model, dataset, optimizer="sgd"):
  """:func:`directionality_figure` of the ``none`` runs of one model, dataset and optimizer."""
  none = statistics.none_row(comparison, model, dataset, optimizer)
  if none is None:
    return None
  frames = list(_chosen_frames(runs, none, run_folder.DIRECTIONALITY))
  return directionality_figure(frames, f"{_title(model, dataset, None, optimizer)}, none")


def zscore_figures(layer_stats: pd.DataFrame, threshold: float, case: int) -> list:
  """One :func:`plot_zscores` figure per selection of a run with a measure (none for
  runs without normalized values, e.g. ``random``)."""
  if layer_stats.empty or layer_stats["normalized"].isna().any():
    return []
  out = []
  for epoch in sorted(layer_stats["epoch"].unique()):
    width = max(6.0, 0.25 * int((layer_stats["epoch"] == epoch).sum()))
    fig, ax = _pyplot().subplots(figsize=(width, 3.5))
    plot_zscores(layer_stats, epoch, threshold, case, ax=ax)
    fig.tight_layout()
    out.append(fig)
  return out
