"""Forking a run from another's checkpoint: the same run as training it alone."""

import json
import os
import subprocess
import sys

import jax
import pytest
from test_train import ROOT, STEPS, mock_cifar, read, tiny_config

import gradamp_jax as ga
from gradamp_jax.sweeps import fork
from gradamp_jax.training import optimizer, train
from gradamp_jax.training import steps as steps_lib

pytestmark = pytest.mark.slow  # trains runs end to end
PHASES = ((1, 0.05, 0, 1), (3, 0.05, 1, 2), (4, 0.02, 0, 1))
TIMING = ("epoch_seconds", "images_per_second")


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
  [dict(method="none"), dict(method="matched_random", measure="G_prime", case=1, threshold=0.3)],
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


def test_a_third_measure_tracks_selects_and_forks_like_the_others(tmp_path):
  tracked = ("G", "G_prime", "GSNR")
  configs = {
    "parent": config_of(measure="GSNR", case=2, threshold=0.5),
    "alone": config_of(measure="GSNR", case=1, threshold=0.3),
  }
  for config in configs.values():
    config.tracked_measures = tracked
  configs["parent"].keep_checkpoints = 3  # the fork needs epoch 2's
  dirs = {name: str(tmp_path / name) for name in ("parent", "alone", "forked")}
  with mock_cifar():
    train.train_and_evaluate(configs["parent"], dirs["parent"])
    train.train_and_evaluate(configs["alone"], dirs["alone"])
    assert fork.fork(configs["alone"], dirs["forked"], dirs["parent"], 2)
    train.train_and_evaluate(configs["alone"], dirs["forked"])
  rows = read(os.path.join(dirs["parent"], "directionality.jsonl"))
  assert set(rows[0]) == {"epoch", "layer", "index", "eligible", "G", "G_prime", "GSNR"}
  assert all(r["GSNR"] is not None and r["GSNR"] >= 0 for r in rows)
  stats = read(os.path.join(dirs["parent"], "layer_stats.jsonl"))
  assert stats and {r["measure"] for r in stats} == {"GSNR"}
  want, got = outputs(dirs["alone"]), outputs(dirs["forked"])
  assert without_timing(got["metrics.jsonl"]) == without_timing(want["metrics.jsonl"])
  assert got["layer_stats.jsonl"] == want["layer_stats.jsonl"]


def test_selecting_by_an_untracked_measure_is_refused():
  config = config_of(measure="GSNR")
  with pytest.raises(ValueError, match=r"config.amplification.measure: 'GSNR' is not in"):
    train.train_and_evaluate(config, "/nonexistent-workdir")
