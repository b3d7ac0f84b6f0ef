"""The training program end to end on tfds.testing.mock_data."""

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorflow_datasets as tfds
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import gradamp_jax as ga
from benchmarks import gpu_checks
from configs import default
from gradamp_jax import input_pipeline, jsonl, run_folder
from gradamp_jax.training import cohort, config_fields, optimizer, outputs, train
from gradamp_jax.training import data as data_lib
from gradamp_jax.training import steps as steps_lib

pytestmark = pytest.mark.slow  # trains runs end to end
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUM_EXAMPLES = 48
BATCH = 8
STEPS = NUM_EXAMPLES // BATCH


def tiny_config(**amplification):
  config = default.get_config()
  config.model = "resnet8"
  config.batch_size = BATCH
  config.eval_batch_size = 16
  config.phases = ((1, 0.05, 0, 1), (3, 0.05, 1, 2))
  config.amplification.measure = "G"
  config.amplification.case = 2
  config.amplification.threshold = 0.5
  config.amplification.update(amplification)
  return config


@contextlib.contextmanager
def mock_cifar():
  """Random CIFAR-shaped TFDS data; mock_data does not cover is_prepared (a disk look-up)."""
  with (
    mock.patch.object(tfds.core.DatasetBuilder, "is_prepared", lambda self: True),
    tfds.testing.mock_data(num_examples=NUM_EXAMPLES),
  ):
    yield


def read(path):
  return jsonl.read_jsonl(path)


def _strip_timing(rows):
  return [{k: v for k, v in r.items() if k not in run_folder.TIMING_FIELDS} for r in rows]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("run"))
  with mock_cifar():
    last = train.train_and_evaluate(tiny_config(), workdir)
  return workdir, last


def test_run_writes_every_output(finished_run):
  workdir, last = finished_run
  assert sorted(os.listdir(workdir)) == [
    ".lock",
    "checkpoints",
    "config.json",
    "directionality.jsonl",
    "layer_stats.jsonl",
    "metrics.jsonl",
    "run.json",
    "tensorboard",
  ]
  config = json.load(open(os.path.join(workdir, "config.json")))
  assert config["model"] == "resnet8" and config["amplification"]["measure"] == "G"
  metrics = read(os.path.join(workdir, "metrics.jsonl"))
  assert [m["epoch"] for m in metrics] == [1, 2, 3]
  for key in (
    "lr",
    "train_loss",
    "train_accuracy",
    "test_loss",
    "test_accuracy",
    "epoch_seconds",
    "amplified_layers",
  ):
    assert all(np.isfinite(m[key]) for m in metrics), key
  assert all(0 <= m["test_accuracy"] <= 1 for m in metrics)
  assert metrics[-1] == last
  run = json.load(open(os.path.join(workdir, "run.json")))
  assert run["steps_per_epoch"] == STEPS and run["num_test"] == NUM_EXAMPLES
  # resnet8: 9 convs (7 + 2 projection shortcuts), 9 BatchNorms, 1 Dense.
  assert len(run["layers"]) == 19 and all(entry["eligible"] for entry in run["layers"])
  # Network order: stem first, classifier last (the tree's order would put "fc" third).
  assert [entry["index"] for entry in run["layers"]] == list(range(19))
  assert [entry["layer"] for entry in run["layers"]][:3] == ["conv1", "bn1", "layer1/0/conv1"]
  assert run["layers"][-1]["layer"] == "fc"
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  # Checkpoints are indexed by update count; the last two epochs' are kept.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints")), key=int) == [
    str(2 * STEPS),
    str(3 * STEPS),
  ]


def test_selection_happens_at_the_end_of_the_analysis_epoch(finished_run):
  workdir, _ = finished_run
  stats = read(os.path.join(workdir, "layer_stats.jsonl"))
  run = json.load(open(os.path.join(workdir, "run.json")))
  assert [s["layer"] for s in stats] == [entry["layer"] for entry in run["layers"]]
  # Epoch 2 (the amplified phase's first) is analysed; selection takes effect at step 2*STEPS.
  assert {s["epoch"] for s in stats} == {2} and {s["step"] for s in stats} == {2 * STEPS}
  values = np.array([s["value"] for s in stats])
  normalized = np.array([s["normalized"] for s in stats])
  np.testing.assert_allclose(normalized, (values - values.mean()) / values.std(), atol=1e-4)
  selected = [s["selected"] for s in stats]
  assert selected == list(np.abs(normalized) > 0.5)
  metrics = read(os.path.join(workdir, "metrics.jsonl"))
  assert [m["amplified_layers"] for m in metrics] == [0, 0, sum(selected)]
  assert sum(selected) > 0


def assert_same_run(workdir, other, step):
  """Two run folders hold the same rows and, at update ``step``, the same state, bitwise."""
  with (
    ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as a,
    ocp.CheckpointManager(os.path.join(other, "checkpoints")) as b,
  ):
    want, got = a.restore(step), b.restore(step)
  for x, y in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_array_equal(x, y)
  for name in ("metrics.jsonl", "layer_stats.jsonl", "directionality.jsonl"):
    assert _strip_timing(read(os.path.join(other, name))) == _strip_timing(
      read(os.path.join(workdir, name))
    )


def assert_resuming_epoch_3_is_bitwise(config, workdir, resumed):
  """A copy of the finished run ``workdir`` that lost its epoch-3 checkpoint resumes from
  epoch 2 (mid-phase: the analysis accumulators are in the state) to the same state and
  the same rows."""
  shutil.copytree(workdir, resumed)
  shutil.rmtree(os.path.join(resumed, "checkpoints", str(3 * STEPS)))
  with mock_cifar():
    train.train_and_evaluate(config, resumed)
  assert_same_run(workdir, resumed, 3 * STEPS)


def test_a_cohort_on_a_cpu_trains_each_member_as_its_run_alone_bitwise(finished_run, tmp_path):
  """On a CPU a cohort runs each member with its run's own program: member seed 0 ends with
  its run alone's state and rows, bit for bit; member seed 1 is a run of its own."""
  workdir, _ = finished_run
  configs, workdirs = cohort.members_of(tiny_config(), str(tmp_path), ["seed=0,1"])
  with mock_cifar():
    rows = train.train_cohort(configs, workdirs)
  assert_same_run(workdir, workdirs[0], 3 * STEPS)
  assert [r["epoch"] for r in rows] == [3, 3] and rows[0]["train_loss"] != rows[1]["train_loss"]


def test_resume_mid_phase_is_bitwise_identical(finished_run, tmp_path):
  workdir, _ = finished_run
  assert_resuming_epoch_3_is_bitwise(tiny_config(), workdir, str(tmp_path / "resumed"))


def test_a_finished_run_is_done_at_once_and_a_run_ends_with_one_line(
  finished_run, monkeypatch, capsys, caplog
):
  workdir, last = finished_run
  monkeypatch.setattr(data_lib, "load", lambda configs: pytest.fail("read data"))
  with jax.log_compiles(), caplog.at_level(logging.WARNING, logger="jax"):
    assert train.train_and_evaluate(tiny_config(), workdir) == last
  assert not [r for r in caplog.records if "ompil" in r.getMessage()]  # nothing compiled
  assert train.train_and_evaluate(tiny_config(), workdir, until_epoch=2) == last
  out = capsys.readouterr().out.splitlines()
  assert out[0] == f"Run in {workdir} already trained 3 of 3 epochs (asked for 3); nothing to do."
  assert out[1].endswith("already trained 3 of 3 epochs (asked for 2); nothing to do.")
  rows = read(os.path.join(workdir, "metrics.jsonl"))
  outputs.print_summary(workdir, 3)
  best = max(rows, key=lambda r: r["test_accuracy"])
  seconds = sum(r["epoch_seconds"] for r in rows)
  assert capsys.readouterr().out == (
    f"Run finished (3/3 epochs, {seconds:.0f} s of training) in {workdir}: test accuracy "
    f"{100 * last['test_accuracy']:.2f} % (best {100 * best['test_accuracy']:.2f} % at "
    f"epoch {best['epoch']})\n"
  )
  outputs.print_summary(workdir, 5)
  assert capsys.readouterr().out.startswith("Run stopped after epoch 3 (3/5 epochs")


def test_steps_per_dispatch_change_nothing_and_compile_once(
  finished_run, tmp_path, monkeypatch, capsys
):
  """4 steps per call (calls of 4 and 2 steps) against one call per epoch: bitwise the same
  run, the loop traced once for every phase, selection and call length; and the same run
  as one step per call without a loop (the finished run) up to rounding."""
  traces = []
  make_train_chunk = steps_lib.make_train_chunk

  def counted(*args, **kwargs):
    chunk = make_train_chunk(*args, **kwargs)

    def traced(*a):
      traces.append(kwargs["loop"])  # runs once per trace, never when a compiled call runs
      return chunk(*a)

    return traced

  monkeypatch.setattr(steps_lib, "make_train_chunk", counted)
  outputs = []
  for per_dispatch in (4, STEPS):
    config = tiny_config()
    config.steps_per_dispatch = per_dispatch
    workdir = tmp_path / str(per_dispatch)
    with mock_cifar():
      train.train_and_evaluate(config, str(workdir))
    with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
      leaves = jax.tree.leaves(manager.restore(3 * STEPS))
    rows = {
      name: _strip_timing(read(workdir / name))
      for name in ("metrics.jsonl", "layer_stats.jsonl", "directionality.jsonl")
    }
    outputs.append((leaves, rows))
  assert traces == [True, True]  # one trace per run
  assert "warning: steps_per_dispatch=4 runs the steps in a loop" in capsys.readouterr().err
  (four, four_rows), (whole, whole_rows) = outputs
  assert four_rows == whole_rows
  for x, y in zip(four, whole, strict=True):
    np.testing.assert_array_equal(x, y)
  # The GPU suite's check of a loop against one step per call (benchmarks/gpu_checks.py).
  check = gpu_checks.compare_runs("loop", [(tmp_path / "4", finished_run[0])], gpu_checks.LOOP)
  assert check.passed, check.line()


def test_each_device_computes_its_half_of_the_batch():
  """The batch gathered from the replicated split is sharded before the model runs: on two
  devices the compiled step convolves 4 images per device, not the global 8."""
  config = tiny_config()
  tx = optimizer.create_optimizer(config, STEPS)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  mesh = Mesh(np.array(jax.devices()[:2]), ("data",))
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
    rng.integers(0, 256, (NUM_EXAMPLES, 32, 32, 3), dtype=np.uint8),
    rng.integers(0, 10, NUM_EXAMPLES).astype(np.int32),
  )
  plan = input_pipeline.epoch_plan(0, 1, num_examples=NUM_EXAMPLES, batch_size=BATCH)
  history = {k: jnp.zeros(STEPS) for k in steps_lib.STEP_METRICS}
  for loop in (False, True):
    chunk = jax.jit(
      steps_lib.make_train_chunk(
        graphdef, tx, (0.5,) * 3, (0.25,) * 3, NamedSharding(mesh, P("data")), loop=loop
      )
    )
    text = (
      chunk.lower(state, input_pipeline.to_device(split, mesh), plan, 0, 1, history)
      .compile()
      .as_text()
    )
    assert "f32[4,32,32,16]" in text and "f32[8,32,32,16]" not in text


def test_chunk_bounds():
  assert train.chunk_bounds(0, 6, 4) == [(0, 4), (4, 6)]
  assert train.chunk_bounds(3, 6, 50) == [(3, 6)]
  assert train.chunk_bounds(2, 6, 1) == [(2, 3), (3, 4), (4, 5), (5, 6)]
  assert train.chunk_bounds(6, 6, 2) == []


def test_evaluation_counts_every_example_once():
  """The on-device evaluation against a numpy sum over the examples one at a time."""
  config = tiny_config()
  tx = optimizer.create_optimizer(config, 1)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  rng = np.random.default_rng(0)
  split = input_pipeline.Split(
    rng.integers(0, 256, (37, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, 37).astype(np.int32)
  )
  mesh = Mesh(np.array(jax.devices()), ("data",))
  mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
  evaluate = jax.jit(steps_lib.make_evaluate(graphdef, mean, std, NamedSharding(mesh, P("data"))))
  sums = jax.device_get(evaluate(state, input_pipeline.to_device_batches(split, 16, mesh)))
  model = nnx.merge(graphdef, state.params, state.batch_stats)
  images = (split.images / 255.0 - np.asarray(mean)) / np.asarray(std)
  logits = np.asarray(
    jax.jit(lambda x: model(x, train=False))(jnp.asarray(images, jnp.float32)), np.float64
  )
  log_p = (
    logits
    - np.log(np.sum(np.exp(logits - logits.max(-1, keepdims=True)), -1, keepdims=True))
    - logits.max(-1, keepdims=True)
  )
  assert float(sums["count"]) == 37
  assert float(sums["correct"]) == np.sum(logits.argmax(-1) == split.labels)
  np.testing.assert_allclose(
    float(sums["loss"]), -np.sum(log_p[np.arange(37), split.labels]), rtol=1e-4
  )


def test_directionality_of_every_layer_every_epoch(finished_run):
  workdir, _ = finished_run
  rows = read(os.path.join(workdir, "directionality.jsonl"))
  layers = [
    entry["layer"] for entry in json.load(open(os.path.join(workdir, "run.json")))["layers"]
  ]
  assert [(r["epoch"], r["layer"], r["index"]) for r in rows] == [
    (e, name, i) for e in (1, 2, 3) for i, name in enumerate(layers)
  ]
  for key in ("G", "G_prime"):
    assert all(0 <= r[key] <= 1 for r in rows), key
  # The selection analysed epoch 2 with the same accumulators: the same G values.
  stats = read(os.path.join(workdir, "layer_stats.jsonl"))
  assert [s["value"] for s in stats] == [r["G"] for r in rows if r["epoch"] == 2]


def test_unamplified_run_measures_directionality_too(tmp_path):
  config = tiny_config(method="none")
  config.phases = ((2, 0.05, 0, 1),)
  with mock_cifar():
    train.train_and_evaluate(config, str(tmp_path))
  rows = read(tmp_path / "directionality.jsonl")
  assert sorted({r["epoch"] for r in rows}) == [1, 2] and len(rows) == 2 * 19
  assert all(0 <= r["G"] <= 1 and 0 <= r["G_prime"] <= 1 for r in rows)
  assert not os.path.exists(tmp_path / "layer_stats.jsonl") or not read(
    tmp_path / "layer_stats.jsonl"
  )
  config.track_directionality = False
  tx = optimizer.create_optimizer(config, STEPS)
  _, state = steps_lib.create_train_state(config, 10, tx)
  with pytest.raises(ValueError, match="no DirectionalityState"):
    ga.directionality_report(state.opt_state, state.params)


def test_matched_random_rows_keep_the_measures_choice():
  config = tiny_config(method="matched_random", measure="G", case=2, threshold=0.3)
  tx, graphdef, state, batch = _state_and_batch(config, steps_per_epoch=1)
  step = jax.jit(steps_lib.make_train_step(graphdef, tx))
  for _ in range(2):  # epoch 2 is analysed; its selection is made at the third update
    state, _ = step(state, batch)
  state, _ = step(state, dict(batch, image=batch["image"][::-1]))
  rows = outputs.layer_stat_rows(config, state.opt_state, state.params)
  assert {r["epoch"] for r in rows} == {2}
  by_measure = [r["selected_by_measure"] for r in rows]
  assert by_measure == [abs(r["normalized"]) > 0.3 for r in rows]
  assert sum(r["selected"] for r in rows) == sum(by_measure) > 0


def test_resuming_on_other_data_is_refused(finished_run, tmp_path):
  workdir, _ = finished_run
  moved = str(tmp_path / "moved")
  shutil.copytree(workdir, moved)
  shutil.rmtree(os.path.join(moved, "checkpoints", str(3 * STEPS)))
  path = os.path.join(moved, "run.json")
  info = json.load(open(path))
  json.dump(dict(info, num_train=info["num_train"] + 1), open(path, "w"))
  with mock_cifar(), pytest.raises(ValueError, match=r"other data \(num_train 49 -> 48"):
    train.train_and_evaluate(tiny_config(), moved)


def test_data_fingerprint_sees_one_pixel():
  rng = np.random.default_rng(0)
  split = lambda: input_pipeline.Split(
    rng.integers(0, 255, (4, 2, 2, 3), dtype=np.uint8), np.arange(4, dtype=np.int32)
  )
  data = input_pipeline.Dataset(
    name="x",
    class_names=tuple("abcd"),
    train=split(),
    test=split(),
    validation=None,
    num_classes=4,
    mean=(0, 0, 0),
    std=(1, 1, 1),
  )
  before = outputs.data_fingerprint(data)
  assert outputs.data_fingerprint(data) == before
  data.train.images[1, 0, 0, 2] ^= 1
  assert outputs.data_fingerprint(data) != before


def test_finished_run_is_not_rerun(finished_run):
  workdir, last = finished_run
  before = os.path.getmtime(os.path.join(workdir, "metrics.jsonl"))
  with mock_cifar():
    assert train.train_and_evaluate(tiny_config(), workdir) == last
  assert os.path.getmtime(os.path.join(workdir, "metrics.jsonl")) == before


def test_an_unreadable_config_json_is_not_taken_for_a_fresh_workdir(tmp_path):
  (tmp_path / "config.json").write_text('{"model": "resn')  # cut short
  with pytest.raises(ValueError):
    outputs.check_same_experiment(tiny_config(), str(tmp_path))


def test_resuming_with_another_config_is_refused(finished_run):
  workdir, _ = finished_run
  config = tiny_config(threshold=0.7)
  config.image_folder = "/elsewhere"  # data locations may change
  with pytest.raises(ValueError, match=r"different config \(fields: amplification.threshold\)"):
    outputs.check_same_experiment(config, workdir)
  config = tiny_config()
  config.image_folder, config.keep_checkpoints = "/elsewhere", 5
  outputs.check_same_experiment(config, workdir)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = tiny_config(method="none")
  config.phases = ((1, 0.01, 0, 1), (2, 1e30, 0, 1))
  with mock_cifar():
    with pytest.raises(train.NonFiniteError, match=r"epoch 2, step \d+"):
      train.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == [str(STEPS)]
  assert [m["epoch"] for m in read(tmp_path / "metrics.jsonl")] == [1]


def _state_and_batch(config, steps_per_epoch=1):
  tx = optimizer.create_optimizer(config, steps_per_epoch)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  rng = np.random.default_rng(0)
  batch = dict(
    image=jnp.asarray(rng.normal(size=(BATCH, 32, 32, 3)), jnp.float32),
    label=jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32),
  )
  return tx, graphdef, state, batch


def test_selected_layers_update_is_factor_times_plain_update():
  config = tiny_config(method="intelligent", measure="G", case=2, threshold=0.5)
  config.momentum, config.weight_decay = 0.0, 0.0
  config.phases = ((3, 0.05, 1, 2.0),)  # 2 steps per epoch: epoch 1 analysed, 2 amplified
  tx, graphdef, state, batch = _state_and_batch(config, steps_per_epoch=2)
  other = dict(image=batch["image"][::-1] * 0.5, label=(batch["label"] + 3) % 10)
  step = jax.jit(steps_lib.make_train_step(graphdef, tx))
  state, _ = step(state, batch)
  state, _ = step(state, other)
  amplified, _ = step(state, batch)  # frozen batch, selection active
  plain_config = tiny_config(method="none")
  plain_config.momentum, plain_config.weight_decay, plain_config.phases = 0.0, 0.0, config.phases
  plain_tx = optimizer.create_optimizer(plain_config, 2)
  plain_state = state._replace(opt_state=plain_tx.init(state.params))
  plain, _ = jax.jit(steps_lib.make_train_step(graphdef, plain_tx))(plain_state, batch)

  mask = np.asarray(ga.find_state(amplified.opt_state).mask)
  assert 0 < mask.sum() < len(mask)
  index = ga.layer_index(state.params)
  before = jax.tree.leaves(state.params)
  for leaf, b, a, p in zip(
    index.leaf_layer, before, jax.tree.leaves(amplified.params), jax.tree.leaves(plain.params)
  ):
    factor = 2.0 if mask[leaf] else 1.0
    # atol: float32 spacing of parameters near 1 (BatchNorm scales) is 1.2e-7 per subtraction.
    np.testing.assert_allclose(a - b, factor * (p - b), rtol=1e-4, atol=5e-7)


def _steps_on(devices, state, batch, step, steps):
  """``steps`` applications of ``step`` with the batch split over ``devices``."""
  mesh = Mesh(np.array(devices), ("data",))
  state = jax.device_put(state, NamedSharding(mesh, P()))
  data = jax.device_put(batch, NamedSharding(mesh, P("data")))
  for _ in range(steps):
    state, _ = step(state, data)
  return jax.device_get(state)


@pytest.mark.parametrize("conv", ["lax", "im2col"])
def test_two_devices_match_one_device(conv):
  """Same global batch and BatchNorm statistics on one device and two: only the order of the
  reductions differs. After one step that is rounding: per leaf, 2 ulps of the largest
  parameter (the subtraction) plus 64 ulps of the largest update (the gradient's sums); a
  per-device statistic would be off by orders of magnitude. Rounding then grows with the
  steps, so after 5 (across the analysis epoch into amplification) what must be exact is
  checked: the selection."""
  assert jax.device_count() >= 2, "tests/conftest.py forces two host devices"
  config = tiny_config()
  config.conv = conv
  tx, graphdef, state0, batch = _state_and_batch(config, steps_per_epoch=2)
  step = jax.jit(steps_lib.make_train_step(graphdef, tx))
  one, two = (_steps_on(d, state0, batch, step, 1) for d in (jax.devices()[:1], jax.devices()[:2]))
  eps = np.finfo(np.float32).eps
  for p, a, b in zip(*(jax.tree.leaves(s.params) for s in (state0, one, two)), strict=True):
    tolerance = 2 * np.spacing(np.abs(p).max()) + 64 * eps * np.abs(a - p).max()
    assert np.abs(a - b).max() <= tolerance, (a.shape, np.abs(a - b).max(), tolerance)
  one, two = (_steps_on(d, state0, batch, step, 5) for d in (jax.devices()[:1], jax.devices()[:2]))
  for state in (one, two):
    assert int(ga.find_state(state.opt_state).num_selections) == 1
  np.testing.assert_array_equal(
    ga.find_state(one.opt_state).mask, ga.find_state(two.opt_state).mask
  )


@pytest.mark.parametrize(
  "field, value, message",
  [
    ("model", "resnet7", "config.model: must be one of vgg11, .*, got 'resnet7'"),
    ("dataset", "mnist", "config.dataset: must be one of cifar10, cifar100, got 'mnist'"),
    ("conv", "fft", "config.conv: must be one of auto, lax, im2col, got 'fft'"),
    ("phases", ((2, 0.1, 0, 1), (1, 0.1, 1, 2)), r"config.phases: phases\[1\]"),
    ("batch_size", 7, "config.batch_size: must be a positive multiple of the device count"),
    ("amplification.method", "best", "config.amplification.method: must be one of none, "),
    ("amplification.measure", "H", "config.amplification.measure: must be one of G, G_prime"),
    (
      "amplification.case",
      4,
      r"config.amplification.case: must be 1 \(upper tail\), 2 \(two-sided\) or 3 \(lower",
    ),
    ("amplification.ratio", 2.0, r"config.amplification.ratio: must be a number in \[0, 1\]"),
    ("amplification.eligible", "convs", "config.amplification.eligible: must be one of"),
    ("amplification.reselect_every", -1, "config.amplification.reselect_every"),
    ("image_folder", "/no/such/folder", "config.image_folder: folder '/no/such/folder'"),
    ("optimizer", "adam", "config.optimizer: must be one of sgd, adamw, lamb, lars, got 'adam'"),
    ("adam_b2", 1.0, r"config.adam_b2: must be a number in \[0, 1\), got 1.0"),
    ("adam_eps", 0.0, "config.adam_eps: must be a finite number > 0, got 0.0"),
    ("lars_trust_coefficient", -1.0, "config.lars_trust_coefficient: must be a finite number"),
    ("amplification.where", "params", "config.amplification.where: must be one of gradients, "),
  ],
)
def test_bad_config_names_the_field(field, value, message):
  config = tiny_config()
  if field == "amplification.ratio":
    config.amplification.method = "random"
  node, _, leaf = field.rpartition(".")
  (config[node] if node else config)[leaf] = value
  with pytest.raises(ValueError, match=message):
    config_fields.validate_config(config)


def test_unwritable_workdir(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(ValueError, match="workdir: .* is not a writable directory"):
    outputs.check_workdir(str(blocker / "sub"))


def test_main_exits_non_zero_with_the_field_named(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "gradamp_jax.main",
      "--config",
      "configs/quickstart.py",
      "--workdir",
      str(tmp_path),
      "--config.amplification.method=best",
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2
  assert "config.amplification.method: must be one of none, " in result.stderr


def test_too_few_examples_for_a_batch_names_the_fields(tmp_path):
  config = tiny_config()
  config.batch_size = 2**16  # more than the mock split holds
  with mock_cifar():
    with pytest.raises(
      ValueError,
      match=r"config.batch_size: 65536 exceeds the \d+ training examples "
      r"of train_split='train'.*smaller batch_size",
    ):
      train.train_and_evaluate(config, str(tmp_path))
