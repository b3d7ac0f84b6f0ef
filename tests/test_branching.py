"""Branched sweeps: every member's folder equals its run trained alone; resumable."""

import os
import shutil

import pytest
from test_fork import outputs, without_timing
from test_train import STEPS, mock_cifar, read, tiny_config

from gradamp_jax.jsonl import JsonlWriter
from gradamp_jax.sweeps import branching
from gradamp_jax.training import train

pytestmark = pytest.mark.slow  # trains runs end to end
# Two selection points: epoch 2 is analysed (amplified in 3), epoch 4 (amplified in 5).
PHASES = ((1, 0.05, 0, 1), (3, 0.05, 1, 2), (5, 0.02, 1, 2))
RULES = {  # G case 2 at 0.5 and 0.5001 pick the same layers on this data (checked below)
  "none": dict(method="none"),
  "g-0.5": dict(method="intelligent", measure="G", case=2, threshold=0.5),
  "all": dict(method="all"),
  "g-0.5001": dict(method="intelligent", measure="G", case=2, threshold=0.5001),
  "matched": dict(method="matched_random", measure="G_prime", case=1, threshold=0.3),
}


def config_of(rule):
  config = tiny_config(**rule)
  config.phases = PHASES
  return config


def members(root):
  return [
    branching.Member(name, config_of(rule), os.path.join(root, name))
    for name, rule in RULES.items()
  ]


def train_in_process(trained):
  def train_segment(member, until_epoch):
    metrics = os.path.join(member.workdir, "metrics.jsonl")
    before = len(read(metrics)) if os.path.exists(metrics) else 0
    train.train_and_evaluate(member.config, member.workdir, until_epoch=until_epoch)
    trained.append((member.name, until_epoch, len(read(metrics)) - before))

  return train_segment


@pytest.fixture(scope="module")
def branched(tmp_path_factory):
  root = str(tmp_path_factory.mktemp("branched"))
  runs, trained = members(root), []
  with mock_cifar():
    (tree_members,) = branching.roots(runs)
    tree = branching.run_tree(tree_members, train_in_process(trained))
  return root, runs, tree, trained


def test_grid_is_one_tree_and_forks_where_selections_differ(branched):
  root, runs, tree, trained = branched
  assert trained[0] == ("none", 2, 2)  # the trunk: epochs 1-2, shared by all five
  forks = {(r["member"], r["epoch"]) for r in tree if "forked_from" in r}
  assert {m.name for m in runs[1:]} <= {name for name, epoch in forks if epoch == 2}
  # g-0.5 and g-0.5001 make the same selections at both points: one trajectory.
  assert ("g-0.5001", 5) in forks
  assert "g-0.5001" not in [name for name, _, _ in trained]
  counts = branching.count_epochs(tree, runs)
  assert counts["epochs_members"] == 5 * 5
  assert counts["epochs_trained"] == sum(epochs for _, _, epochs in trained)
  assert counts["epochs_trained"] < counts["epochs_members"]


@pytest.mark.parametrize("name", ["none", "all", "g-0.5001", "matched"])
def test_member_equals_its_run_trained_alone(branched, tmp_path, name):
  root, _, _, _ = branched
  alone = str(tmp_path / name)
  with mock_cifar():
    train.train_and_evaluate(config_of(RULES[name]), alone)
  want, got = outputs(alone), outputs(os.path.join(root, name))
  assert without_timing(got["metrics.jsonl"]) == without_timing(want["metrics.jsonl"])
  assert got["directionality.jsonl"] == want["directionality.jsonl"]
  assert got.get("layer_stats.jsonl", []) == want.get("layer_stats.jsonl", [])


def test_members_with_the_same_selections_have_the_same_results(branched):
  root, _, _, _ = branched
  a, b = (outputs(os.path.join(root, n)) for n in ("g-0.5", "g-0.5001"))
  assert [r["selected"] for r in a["layer_stats.jsonl"]] == [
    r["selected"] for r in b["layer_stats.jsonl"]
  ]
  assert without_timing(a["metrics.jsonl"]) == without_timing(b["metrics.jsonl"])


def test_rerun_trains_nothing_and_an_interrupted_tree_resumes(branched, tmp_path):
  root, _, _, _ = branched
  trained = []
  with mock_cifar():
    branching.run_tree(members(root), train_in_process(trained))
  assert trained == []
  # Cut two members short (their last epoch's checkpoint and rows gone, as after a crash):
  # grown level by level, their segments come in one call (one cohort where they share
  # a program).
  copy = str(tmp_path / "copy")
  shutil.copytree(root, copy)
  runs, calls, want = members(copy), [], {}
  for name in ("all", "matched"):
    cut = os.path.join(copy, name)
    shutil.rmtree(os.path.join(cut, "checkpoints", str(5 * STEPS)))
    want[name] = read(os.path.join(cut, "metrics.jsonl"))
    JsonlWriter(os.path.join(cut, "metrics.jsonl")).write(want[name][:4])
  train_segment = train_in_process(trained)

  def train_segments(segments):
    calls.append([(m.name, until) for m, until in segments])
    for m, until in segments:
      train_segment(m, until)

  with mock_cifar():
    branching.run_forest(branching.roots(runs), train_segments)
  assert calls == [[("all", 5), ("matched", 5)]]
  assert trained == [("all", 5, 1), ("matched", 5, 1)]
  for name, rows in want.items():
    assert without_timing(read(os.path.join(copy, name, "metrics.jsonl"))) == without_timing(rows)
