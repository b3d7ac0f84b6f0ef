"""Every file a run writes but the checkpoints: :class:`RunOutputs` for a run that trains,
:func:`write_fork` for a fork."""

from __future__ import annotations

import hashlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import gradamp_jax as ga
from gradamp_jax import layers as layers_lib
from gradamp_jax import run_folder
from gradamp_jax.directionality import finite_or_none
from gradamp_jax.run_folder import DIRECTIONALITY, LAYER_STATS, METRICS
from gradamp_jax.training import conv_choice


def check_workdir(workdir: str) -> None:
  try:
    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(workdir, ".write_probe")
    with open(probe, "w") as f:
      f.write("ok")
    os.remove(probe)
  except OSError as e:
    raise ValueError(f"workdir: {workdir!r} is not a writable directory ({e})") from e


def check_same_experiment(config, workdir: str) -> None:
  """Refuses to resume a workdir whose run used another config (but for data locations)."""
  if not os.path.exists(run_folder.path(workdir, run_folder.CONFIG)):
    return
  before = run_folder.read_json(workdir, run_folder.CONFIG)  # unreadable: raises
  now = json.loads(conv_choice.resolve(config, workdir).to_json_best_effort())
  changed = run_folder.differing_fields(before, now)
  if changed:
    raise ValueError(
      f"workdir: {workdir!r} holds a run with a different config (fields: "
      f"{', '.join(changed)}); use a new workdir, or the same config to resume"
    )


def data_fingerprint(dataset) -> str:
  """A hash of every split's images and labels: what the run was trained on."""
  digest = hashlib.blake2b(digest_size=16)
  for split in (dataset.train, dataset.validation, dataset.test):
    if split is not None:
      digest.update(np.ascontiguousarray(split.images).data)
      digest.update(np.ascontiguousarray(split.labels).data)
  return digest.hexdigest()


# run.json fields that must not change when a run resumes: the data it trains on.
DATA_IDENTITY = tuple(
  "dataset num_train num_validation num_test num_classes steps_per_epoch data_fingerprint".split()
)


def check_same_data(workdir: str, info: dict) -> None:
  """Refuses to resume on other data than the run started with (compares ``run.json``)."""
  if not os.path.exists(run_folder.path(workdir, run_folder.RUN_INFO)):
    return
  before = run_folder.read_json(workdir, run_folder.RUN_INFO)  # unreadable: raises
  changed = [
    f"{k} {before[k]!r} -> {info[k]!r}"
    for k in DATA_IDENTITY
    if k in before and k in info and before[k] != info[k]
  ]
  if changed:
    raise ValueError(
      f"workdir: {workdir!r} holds a run trained on other data ({'; '.join(changed)}); "
      "point data_dir/image_folder at the data it started with, or use a new workdir"
    )


def network_depth(graphdef, state, image_shape) -> dict[str, int]:
  """Each layer's position in the forward pass (0: the stem), from a trace of the model."""
  image = jnp.zeros((1, *image_shape), jnp.float32)
  forward = lambda params: nnx.merge(graphdef, params, state.batch_stats)(image, train=False)
  return {name: depth for depth, name in enumerate(layers_lib.network_order(forward, state.params))}


def in_network_order(rows: list[dict], depth: dict[str, int]) -> list[dict]:
  """Per-layer rows sorted by depth, with ``index`` = the layer's depth."""
  return sorted((dict(r, index=depth[r["layer"]]) for r in rows), key=lambda r: r["index"])


def run_info(config, dataset, steps_per_epoch, params, depth: dict[str, int]) -> dict:
  index = layers_lib.layer_index(params)
  eligible = layers_lib.eligible_mask(index, config.amplification.eligible)
  layers = [
    dict(layer=n, params=list(p), size=s, eligible=e)
    for n, p, s, e in zip(index.names, index.param_names, index.layer_sizes(), eligible)
  ]
  return dict(
    jax_version=jax.__version__,
    devices=[str(d) for d in jax.devices()],
    cpu=conv_choice.machine_key()["cpu"],
    process_count=jax.process_count(),
    dataset=dataset.name,
    num_train=len(dataset.train),
    num_validation=0 if dataset.validation is None else len(dataset.validation),
    num_test=len(dataset.test),
    data_fingerprint=data_fingerprint(dataset),
    num_classes=dataset.num_classes,
    steps_per_epoch=steps_per_epoch,
    layers=in_network_order(layers, depth),
    layer_rule="a layer is a parameter path without its last key; layers are listed "
    "in network order (index: position in the forward pass)",
    eligible_rule=config.amplification.eligible,
  )


def layer_stat_rows(config, opt_state, params) -> list[dict]:
  """``layer_stats.jsonl`` rows of the latest selection."""
  amp = config.amplification
  measured = amp.method in ga.amplification.MEASURED_METHODS
  rows = []
  for r in ga.selection_report(opt_state, params):
    row = {key: r[key] for key in ("epoch", "step", "layer")}
    row["measure"] = amp.measure if measured else None
    row.update({k: finite_or_none(r[k]) if measured else None for k in ("value", "normalized")})
    row.update({key: r[key] for key in ("selected", "scale", "factor", "eligible")})
    row.update(method=amp.method, action=amp.action)
    if amp.method == "matched_random":
      row["selected_by_measure"] = r["selected_by_measure"]
    rows.append(row)
  return rows


def directionality_rows(opt_state, params, eligible: dict[str, bool]) -> list[dict]:
  """``directionality.jsonl`` rows: each tracked measure of each layer, last finished epoch."""
  rows = []
  for r in ga.directionality_report(opt_state, params):
    values = {k: finite_or_none(v) for k, v in r.items() if k not in run_folder.DIRECTIONALITY_KEYS}
    rows.append(dict(epoch=r["epoch"], layer=r["layer"], eligible=eligible[r["layer"]], **values))
  return rows


def _scale_in_effect(config, opt_state) -> np.ndarray:
  """Each layer's scale from the selection in effect; empty when none is."""
  if config.amplification.method == "none":
    return np.ones(0)
  amp = jax.device_get(ga.find_state(opt_state))
  return np.asarray(amp.scale) if amp.active else np.ones(0)


def amplified_layers(config, opt_state) -> int:
  """How many layers the selection in effect scales by other than 1."""
  return int(np.sum(_scale_in_effect(config, opt_state) != 1))


def describe_scales(action: str, scale) -> str:
  """``amplified 3 layers``, ``froze 3 layers``, ``scaled 19 layers by 0.6–1.4`` or ``no
  layer acted on``.

  >>> describe_scales("scale_by_zscore", np.array([0.61, 1.0, 1.44]))
  'scaled 2 layers by 0.61–1.4'
  """
  scales = np.asarray(scale)[np.asarray(scale) != 1]
  if not scales.size:
    return "no layer acted on"
  layers = f"{scales.size} layer{'s' if scales.size > 1 else ''}"
  if np.all(scales == 0):
    return f"froze {layers}"
  if action == "amplify":
    return f"amplified {layers}"
  low, high = float(scales.min()), float(scales.max())
  return f"scaled {layers} by {low:.2g}" + (f"–{high:.2g}" if high != low else "")


def num_selections(config, opt_state) -> int:
  if config.amplification.method == "none":
    return 0
  return int(ga.find_state(opt_state).num_selections)


class RunOutputs:
  """A training run's ``config.json``, ``run.json``, JSON-lines rows and TensorBoard scalars.

  A run resumed at update ``start_step`` keeps the rows before it. Only the process with
  ``write`` writes; ``label`` is printed before each epoch's line.
  """

  def __init__(
    self, workdir: str, config, info: dict, state, *, start_step: int, write: bool, label=""
  ):
    self.config, self.write_files, self.label = config, write, label
    self.depth = {layer["layer"]: layer["index"] for layer in info["layers"]}
    self.eligible = {layer["layer"]: layer["eligible"] for layer in info["layers"]}
    self.selections = num_selections(config, state.opt_state)
    if not write:
      return
    run_folder.write_config(workdir, config)
    run_folder.write_json(workdir, run_folder.RUN_INFO, info)
    epochs_done = start_step // info["steps_per_epoch"]
    before_epoch = (lambda r: r["epoch"] <= epochs_done) if start_step else None
    before_step = (lambda r: r["step"] < start_step) if start_step else None
    self.metrics = run_folder.rows_writer(workdir, METRICS, keep=before_epoch)
    self.layer_stats = run_folder.rows_writer(workdir, LAYER_STATS, keep=before_step)
    self.directionality = run_folder.rows_writer(workdir, DIRECTIONALITY, keep=before_epoch)
    from tensorboardX import SummaryWriter

    self.summary = SummaryWriter(run_folder.path(workdir, run_folder.TENSORBOARD))

  def record_selections(self, state) -> None:
    """Writes the per-layer statistics of a selection made since the last call."""
    selections = num_selections(self.config, state.opt_state)
    if selections > self.selections:
      self.selections = selections
      if self.write_files:
        rows = layer_stat_rows(self.config, state.opt_state, state.params)
        self.layer_stats.write(in_network_order(rows, self.depth))

  def record_epoch(self, row: dict, state) -> None:
    """Writes an epoch's metrics ``row``, its selection and directionality, and prints it."""
    self.record_selections(state)
    if not self.write_files:
      return
    self.metrics.write([row])
    if self.config.track_directionality:
      rows = directionality_rows(state.opt_state, state.params, self.eligible)
      self.directionality.write(in_network_order(rows, self.depth))
    for key, value in row.items():
      if key not in ("epoch", "step", run_folder.FIRST_AFTER_START):
        self.summary.add_scalar(key, value, row["epoch"])
    self.summary.flush()
    num_epochs = ga.num_epochs(self.config.phases)
    scale = _scale_in_effect(self.config, state.opt_state)
    print(
      f"{self.label}epoch {row['epoch']}/{num_epochs}  lr {row['lr']:.4g}  train loss "
      f"{row['train_loss']:.4f} acc {100 * row['train_accuracy']:.2f} %  test loss "
      f"{row['test_loss']:.4f} acc {100 * row['test_accuracy']:.2f} %  "
      f"{describe_scales(self.config.amplification.action, scale)}  {row['epoch_seconds']:.1f}s "
      f"({row['images_per_second']:.0f} img/s)",
      flush=True,
    )

  def close(self) -> None:
    if self.write_files:
      self.summary.close()


def print_summary(workdir: str, num_epochs: int) -> None:
  """One line at the end of a run (or a segment): its epochs, test accuracy and time."""
  rows = run_folder.read_rows(workdir, METRICS)
  last = rows[-1]
  best = max(rows, key=lambda r: r["test_accuracy"])
  state = "finished" if last["epoch"] == num_epochs else f"stopped after epoch {last['epoch']}"
  seconds = sum(r["epoch_seconds"] for r in rows)
  print(
    f"Run {state} ({last['epoch']}/{num_epochs} epochs, {seconds:.0f} s of training) in "
    f"{workdir}: test accuracy {100 * last['test_accuracy']:.2f} % (best "
    f"{100 * best['test_accuracy']:.2f} % at epoch {best['epoch']})",
    flush=True,
  )


def last_metrics(workdir: str) -> dict | None:
  """The last epoch's row of a run's ``metrics.jsonl``; None before its first epoch ends."""
  return (run_folder.read_rows(workdir, METRICS, missing_ok=True) or [None])[-1]


def write_fork(
  workdir: str, config, parent: str, epoch: int, step: int, *, metrics, directionality, layer_stats
) -> None:
  """A forked run's files: the parent's rows (lists of dicts) up to the fork and ``run.json``,
  its own selections, config and ``fork.json``; a stale ``partial_epoch.json`` is removed."""
  files = {METRICS: metrics, DIRECTIONALITY: directionality, LAYER_STATS: layer_stats}
  for name, rows in files.items():
    run_folder.rows_writer(workdir, name).write(rows)
  partial = run_folder.path(workdir, run_folder.PARTIAL_EPOCH)
  if os.path.exists(partial):
    os.remove(partial)
  run_folder.write_config(workdir, config)
  info = run_folder.read_json(parent, run_folder.RUN_INFO)
  run_folder.write_json(workdir, run_folder.RUN_INFO, info)
  run_folder.append_fork(workdir, parent, epoch, step)
