"""Forking a run from another's checkpoint: the same run as training it alone."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pandas as pd
import pytest
from test_train import ROOT, STEPS, mock_cifar, read, tiny_config

import gradamp_jax as ga
from gradamp_jax import run_folder
from gradamp_jax.sweeps import fork
from gradamp_jax.training import optimizer, train
from gradamp_jax.training import steps as steps_lib

pytestmark = pytest.mark.slow  # trains runs end to end
PHASES = ((1, 0.05, 0, 1), (3, 0.05, 1, 2), (4, 0.02, 0, 1))
TIMING = run_folder.TIMING_FIELDS


def config_of(**amplification):
  config = tiny_config(**amplification)
  config.phases = PHASES
  return config


def without_timing(rows):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in rows]


def outputs(workdir):
  return {
    name: read(os.path.join(workdir, name))
    for name in ("metrics.jsonl", "layer_stats.jsonl", "directionality.jsonl")
    if os.path.exists(os.path.join(workdir, name))
  }


@pytest.fixture(scope="module")
def parent(tmp_path_factory):
  """An intelligent run (G, case 2, threshold 0.5) to fork from, finished."""
  workdir = str(tmp_path_factory.mktemp("parent"))
  config = config_of()
  config.keep_checkpoints = 3  # epochs 2, 3 and 4 (may differ between forked runs)
  with mock_cifar():
    train.train_and_evaluate(config, workdir, until_epoch=2)
    assert [r["epoch"] for r in read(os.path.join(workdir, "metrics.jsonl"))] == [1, 2]
    train.train_and_evaluate(config, workdir)
  return workdir


@pytest.mark.parametrize(
  "rule",
  [
    dict(method="none"),
    dict(method="matched_random", measure="G_prime", case=1, threshold=0.3),
    # Another action (every layer scaled by its z-score): the same prefix as the parent's.
    dict(measure="G_prime", action="scale_by_zscore", alpha=0.5),
  ],
)
def test_forked_run_equals_the_run_trained_alone(parent, tmp_path, rule):
  config = config_of(**rule)
  alone, forked = str(tmp_path / "alone"), str(tmp_path / "forked")
  with mock_cifar():
    train.train_and_evaluate(config, alone)
    # Fork at the end of epoch 2, before the first selection, which the run makes itself.
    assert fork.fork(config, forked, parent, 2)
    assert not fork.fork(config, forked, parent, 2)  # done already: left alone
    train.train_and_evaluate(config, forked)
  want, got = outputs(alone), outputs(forked)
  assert without_timing(got["metrics.jsonl"]) == without_timing(want["metrics.jsonl"])
  assert got["directionality.jsonl"] == want["directionality.jsonl"]
  assert got.get("layer_stats.jsonl", []) == want.get("layer_stats.jsonl", [])
  if rule.get("action") == "scale_by_zscore":  # every layer its own scale
    scales = [r["scale"] for r in want["layer_stats.jsonl"]]
    assert len(set(scales)) > 2 and all(0 <= s <= 2 for s in scales)
  with open(os.path.join(forked, "fork.json")) as f:
    assert json.load(f) == [dict(parent=os.path.abspath(parent), epoch=2, step=2 * STEPS)]


def test_run_with_the_same_selection_forks_after_it_and_matches(parent, tmp_path):
  """A threshold between the parent's (0.5) and its smallest selected |Ĝ| selects the same
  layers: such a run may fork after the selection."""
  parent_stats = read(os.path.join(parent, "layer_stats.jsonl"))
  smallest = min(abs(r["normalized"]) for r in parent_stats if r["selected"])
  config = config_of(threshold=(0.5 + smallest) / 2)
  alone, forked = str(tmp_path / "alone"), str(tmp_path / "forked")
  with mock_cifar():
    train.train_and_evaluate(config, alone)
    mine = read(os.path.join(alone, "layer_stats.jsonl"))
    assert [r["selected"] for r in mine] == [r["selected"] for r in parent_stats]
    assert fork.fork(config, forked, parent, 3)
    train.train_and_evaluate(config, forked)
  want, got = outputs(alone), outputs(forked)
  assert without_timing(got["metrics.jsonl"]) == without_timing(want["metrics.jsonl"])
  assert got["layer_stats.jsonl"] == want["layer_stats.jsonl"]  # this run's own rows
  assert got["directionality.jsonl"] == want["directionality.jsonl"]


@pytest.mark.parametrize(
  "change, message",
  [
    (lambda c: setattr(c, "seed", 1), "differ in seed"),
    (lambda c: setattr(c, "phases", ((1, 0.05, 0, 1), (4, 0.05, 1, 2))), "differ in phases"),
    (lambda c: setattr(c, "track_directionality", False), "track_directionality must be"),
    (lambda c: c.amplification.update(method="all"), "selections differ at epoch 3"),
    # The parent's selection, halved by z-score instead: not the same computation after it.
    (lambda c: c.amplification.update(action="scale_by_zscore"), "differ at epoch 3"),
    # Another placement: on two devices its program rounds differently from the first step.
    (lambda c: c.amplification.update(where="updates"), "differ in amplification.where"),
  ],
)
def test_fork_refuses_another_computation(parent, tmp_path, change, message):
  config = config_of()
  change(config)
  with pytest.raises(ValueError, match=message):
    fork.fork(config, str(tmp_path), parent, 3)
  assert not os.path.exists(tmp_path / "checkpoints")


def test_fork_needs_the_parents_checkpoint(parent, tmp_path):
  with pytest.raises(ValueError, match=f"no checkpoint at update {STEPS} "):
    fork.fork(config_of(method="none"), str(tmp_path), parent, 1)


@pytest.mark.parametrize(
  "flags, message",
  [
    (["--fork_from", "elsewhere"], "--fork_from and --fork_epoch go together"),
    (["--fork_from", "elsewhere", "--fork_epoch", "0"], "--fork_epoch: must be a positive"),
    (["--until_epoch", "-1"], "--until_epoch: must be a positive"),
  ],
)
def test_bad_fork_flags_are_one_line_and_status_2(tmp_path, flags, message):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "gradamp_jax.main",
      "--config",
      "configs/quickstart.py",
      "--workdir",
      str(tmp_path),
      *flags,
    ],
    capture_output=True,
    text=True,
    cwd=ROOT,
  )
  assert result.returncode == 2
  assert message in result.stderr.strip().splitlines()[-1]
  assert not os.listdir(tmp_path)


def test_tracked_runs_of_every_method_share_one_state_layout():
  """What makes forking possible: only the selection rule differs, not the state."""
  layouts = set()
  for rule in (
    dict(method="none"),
    dict(method="all"),
    dict(method="random", ratio=0.3),
    dict(method="intelligent", measure="G", case=1),
    dict(method="intelligent", measure="G_prime", case=2),
    dict(method="matched_random", measure="G", case=1),
  ):
    config = config_of(**rule)
    tx = optimizer.create_optimizer(config, STEPS)
    _, state = steps_lib.create_train_state(config, 10, tx)
    layouts.add(str(jax.tree.map(lambda x: (x.shape, str(x.dtype)), state)))
  assert len(layouts) == 1


def test_selection_epochs_are_the_analysed_epochs():
  assert ga.selection_epochs(PHASES) == [2]  # epoch 2 analysed, epoch 3 amplified
  assert ga.selection_epochs(((1, 0.1, 0, 1), (3, 0.1, 1, 2), (5, 0.01, 1, 2))) == [2, 4]
  assert ga.selection_epochs(((6, 0.1, 1, 2),), reselect_every=2) == [1, 3, 5]
  assert ga.selection_epochs(((2, 0.1, 0, 1),)) == []


def test_selecting_by_an_untracked_measure_is_refused():
  config = config_of(measure="GSNR")
  with pytest.raises(ValueError, match=r"config.amplification.measure: 'GSNR' is not in"):
    train.train_and_evaluate(config, "/nonexistent-workdir")


def cli_run(workdir, *args):
  """The real command line on mock CIFAR with tests/own_measure.py as the config file."""
  result = subprocess.run(
    [sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), str(workdir), *args],
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
    env=dict(os.environ, FAULT_CONFIG=os.path.join(ROOT, "tests", "own_measure.py")),
  )
  assert result.returncode == 0, result.stderr[-3000:]
  return result


def test_a_third_measure_and_ones_own_track_select_fork_and_report(tmp_path):
  """GSNR and a measure of one's own (tests/own_measure.py, the package not edited) are
  tracked, selected by and forked like G and G′, through the command line."""
  from gradamp_jax.analysis import report

  tracked = "--config.tracked_measures=('G', 'G_prime', 'GSNR', 'mean_abs')"
  own = (tracked, "--config.amplification.measure=mean_abs", "--config.amplification.case=1")
  own += ("--config.amplification.threshold=-0.5",)
  dirs = {name: tmp_path / "sweep" / name for name in ("parent", "alone", "forked")}
  gsnr = ("--config.amplification.measure=GSNR", "--config.amplification.case=2")
  cli_run(dirs["parent"], tracked, *gsnr, "--config.keep_checkpoints=3")  # threshold 0.5
  cli_run(dirs["alone"], *own)
  cli_run(dirs["forked"], *own, "--fork_from", str(dirs["parent"]), "--fork_epoch", "2")
  rows = read(os.path.join(dirs["parent"], "directionality.jsonl"))
  assert set(rows[0]) == {"epoch", "layer", "index", "eligible", "G", "G_prime", "GSNR", "mean_abs"}
  assert all(r["GSNR"] >= 0 and r["mean_abs"] > 0 for r in rows)
  for name, measure, case, threshold in (
    ("parent", "GSNR", 2, 0.5),
    ("forked", "mean_abs", 1, -0.5),
  ):
    stats = read(os.path.join(dirs[name], "layer_stats.jsonl"))
    assert {(r["measure"], r["epoch"]) for r in stats} == {(measure, 2)}
    analysed = {r["layer"]: r[measure] for r in rows if r["epoch"] == 2}
    values = np.array([analysed[r["layer"]] for r in stats])
    np.testing.assert_allclose([r["value"] for r in stats], values, rtol=1e-6)
    z = (values - values.mean()) / values.std()  # every layer eligible
    assert [r["selected"] for r in stats] == list((z if case == 1 else abs(z)) > threshold)
  want, got = outputs(dirs["alone"]), outputs(dirs["forked"])
  assert without_timing(got["metrics.jsonl"]) == without_timing(want["metrics.jsonl"])
  assert got["layer_stats.jsonl"] == want["layer_stats.jsonl"]
  out = tmp_path / "report"
  assert report.main([str(tmp_path / "sweep"), "--out", str(out)]) == 0
  runs = pd.read_csv(out / "runs.csv")
  assert sorted(runs["measure"]) == ["GSNR", "mean_abs", "mean_abs"] and runs["finished"].all()
  assert "mean_abs c1" in (out / "report.md").read_text()
