"""Config files' arguments and sweeps."""

import json
import os
import subprocess
import sys

import pytest

from configs import quickstart
from gradamp_jax.training import config_fields, optimizer


def test_quickstart_sweep_pairs_every_method_on_the_same_seeds():
  runs = quickstart.get_sweep("seeds=2,thresholds=0.5+1.0")
  assert len(runs) == 2 * (3 + 2 * 2 * 2 * 2)
  for method in ("none", "all", "random", "intelligent", "matched_random"):
    assert {r["seed"] for r in runs if r["method"] == method} == {0, 1}
  measured = [
    (r["method"], r["measure"], r["case"], r["threshold"])
    for r in runs
    if r["seed"] == 0 and "measure" in r
  ]
  assert len(set(measured)) == 16
  assert {r["threshold"] for r in runs if "threshold" in r} == {0.5, 1.0}
  assert all(r["validation_fraction"] == 0.1 for r in runs)
  last = quickstart.get_config(",".join(f"{k}={v}" for k, v in runs[-1].items()))
  assert last.amplification.method == "matched_random" and last.seed == 1
  assert last.validation_fraction == 0.1 and last.model == "resnet8"


def test_quickstart_defaults_and_bad_thresholds():
  config = quickstart.get_config()
  assert config.amplification.method == "intelligent" and config.validation_fraction == 0.0
  assert config.phases == ((1, 0.1, 0, 1), (3, 0.02, 1, 2))
  with pytest.raises(ValueError, match="thresholds='a\\+1': expected numbers"):
    quickstart.get_sweep("thresholds=a+1")


def test_quickstart_switches_to_the_adamw_study_settings_and_warns_of_sgd_rates():
  sgd = quickstart.get_config()
  adamw = quickstart.get_config("optimizer=adamw")
  assert adamw.phases == ((1, 0.01, 0, 1), (3, 0.002, 1, 2))  # a tenth of SGD's 0.1, 0.02
  assert (adamw.optimizer, adamw.weight_decay, adamw.amplification.where) == (
    "adamw",
    0.05,
    "updates",
  )
  config_fields.check_fields(adamw)
  assert optimizer.config_warnings(sgd) == optimizer.config_warnings(adamw) == []
  sgd.optimizer = "adamw"  # SGD's learning rates under AdamW, as --config.optimizer=adamw
  sgd.amplification.where = "updates"
  (warning,) = optimizer.config_warnings(sgd)
  assert warning.startswith("warning: learning rate 0.1 under optimizer='adamw' is outside")
  with pytest.raises(ValueError, match="config argument optimizer='lamb': one of sgd, adamw"):
    quickstart.get_config("optimizer=lamb")


def test_a_one_epoch_amplified_phase_is_named_in_one_line():
  config = quickstart.get_config()
  config.phases = ((1, 0.1, 0, 1), (2, 0.1, 1, 2), (4, 0.01, 1, 2))
  (warning,) = optimizer.config_warnings(config)
  assert warning.startswith("warning: phases[1] (epoch 2) is an amplified phase of one epoch")
  config.amplification.method = "none"
  assert optimizer.config_warnings(config) == []


def test_the_relatives_configs_validate_and_say_what_they_run():
  from configs import gsnr_learning_rate, random_freeze

  lisa = random_freeze.get_config("ratio=0.25,seed=3")
  config_fields.validate_config(lisa)
  amp = lisa.amplification
  assert (amp.method, amp.action, amp.where, amp.ratio, lisa.seed) == (
    "random",
    "freeze",
    "updates",
    0.25,
    3,
  )
  gsnr = gsnr_learning_rate.get_config("alpha=0.25")
  config_fields.validate_config(gsnr)
  amp = gsnr.amplification
  assert (amp.measure, amp.action, amp.where, amp.alpha, amp.lo, amp.hi) == (
    "GSNR",
    "scale_by_zscore",
    "updates",
    0.25,
    0.5,
    1.5,
  )
  assert "GSNR" in gsnr.tracked_measures


def test_an_action_refused_with_its_fields_named():
  config = quickstart.get_config()
  config.amplification.action = "freeze"
  with pytest.raises(
    ValueError,
    match="config.amplification.action: 'freeze' needs amplification.where='updates', got "
    "where='gradients'",
  ):
    config_fields.validate_config(config)
  config.amplification.update(action="scale_by_zscore", where="updates", lo=1.5, hi=1.0)
  with pytest.raises(ValueError, match=r"config.amplification.hi: must be above lo \(1.5\), got 1"):
    config_fields.validate_config(config)
  config.amplification.update(lo=-1.0)
  with pytest.raises(
    ValueError, match=r"config.amplification.lo: must be a finite number >= 0, got -1.0"
  ):
    config_fields.validate_config(config)
  config.amplification.update(lo=0.5, hi=1.5, method="random")
  with pytest.raises(
    ValueError,
    match="'scale_by_zscore' reads the normalized measure of every layer; amplification.method",
  ):
    config_fields.validate_config(config)


def test_the_actions_study_grid_pairs_every_arm_on_seeds_3_to_5_in_one_layout():
  from configs import replication
  from gradamp_jax import run_folder
  from gradamp_jax.analysis.labels import family_label
  from gradamp_jax.analysis.runs import run_keys

  runs = replication.get_sweep("grid=actions,first_seed=3")
  assert len(runs) == 3 * 10 and {r["seed"] for r in runs} == {3, 4, 5}
  labels, layouts = {}, set()
  for run in runs:
    config = replication.get_config(",".join(f"{k}={v}" for k, v in run.items()))
    config_fields.validate_config(config)
    layouts.add(tuple(config.tracked_measures))
    keys = run_keys(json.loads(config.to_json_best_effort()))
    label = (family_label(keys), keys["threshold"], config.amplification.alpha)
    labels.setdefault(label, set()).add(config.seed)
  assert layouts == {("G", "G_prime", "GSNR")}  # one tree per seed when branched
  assert all(seeds == {3, 4, 5} for seeds in labels.values()) and len(labels) == 10
  families = {label for label, _, _ in labels}
  assert families == {
    "none",
    "G′ c1",
    "matched G′ c1",
    "scale_by_zscore G′ (updates)",
    "freeze G′ c3 (updates)",
    "freeze matched G′ c3 (updates)",
    "scale_by_zscore GSNR (updates)",
  }
  assert (
    run_folder.differing_fields(
      json.loads(replication.get_config("seed=3").to_json_best_effort()),
      json.loads(replication.get_config("seed=3,action=amplify").to_json_best_effort()),
    )
    == []
  )


def test_none_with_any_action_validates_and_selects_nothing():
  """``none`` selects no layer, so the action it names never acts (a sweep's shared action
  may reach its ``none`` arm): the transform is the default's."""
  config = quickstart.get_config("optimizer=adamw")
  config.amplification.update(method="none", action="scale_by_zscore")
  config_fields.validate_config(config)
  assert optimizer.create_amplification(config, 10) is not None  # tracked: one layout


def test_a_cohort_prints_each_members_warnings_once_naming_those_only_some_have(capsys):
  from gradamp_jax.training import train

  plain, low = quickstart.get_config(), quickstart.get_config()
  low.amplification.threshold = -0.5  # case 1 with t <= 0: every member's own warning
  plain.optimizer = low.optimizer = "adamw"  # SGD's rates under AdamW: both members'
  plain.amplification.where = low.amplification.where = "updates"
  train._print_warnings([plain, low], ["runs/a/t=1.0", "runs/a/t=-0.5/"])
  lines = capsys.readouterr().err.splitlines()
  assert len(lines) == 2
  assert lines[0].startswith("warning: learning rate 0.1 under optimizer='adamw'")  # both
  (threshold_warning,) = optimizer.config_warnings(low)[1:]
  assert lines[1] == f"[t=-0.5] {threshold_warning}"


def test_the_depth_study_pairs_its_eight_arms_on_five_seeds_on_a_narrow_vgg19():
  from configs import depth
  from gradamp_jax.analysis.labels import family_label
  from gradamp_jax.analysis.runs import run_keys

  runs = depth.get_sweep()
  assert len(runs) == 5 * 8 and {r["seed"] for r in runs} == set(range(5))
  arms = {}
  for run in runs:
    config = depth.get_config(",".join(f"{k}={v}" for k, v in run.items()))
    config_fields.validate_config(config)
    assert (config.model, config.width, config.tracked_measures) == ("vgg19", 0.25, ("G_prime",))
    assert config.phases == ((1, 0.05, 0, 1), (3, 0.05, 1, 2), (5, 0.005, 1, 2), (6, 0.005, 0, 1))
    keys = run_keys(json.loads(config.to_json_best_effort()))
    arms.setdefault((family_label(keys), keys["threshold"]), set()).add(config.seed)
  assert all(seeds == set(range(5)) for seeds in arms.values())
  assert sorted(arms, key=str) == sorted(
    [("none", None), ("all", None)]
    + [("G′ c1", t) for t in (0.5, 1.0, 1.5, 2.0)]
    + [("matched G′ c1", t) for t in (1.0, 2.0)],
    key=str,
  )
  with pytest.raises(ValueError, match="seeds=0: must be at least 1"):
    depth.get_sweep("seeds=0")


def test_a_config_file_outside_the_repository_imports_the_shipped_ones(tmp_path):
  (tmp_path / "mine.py").write_text(
    "from configs import quickstart\n\n\n"
    "def get_config():\n"
    "  config = quickstart.get_config()\n"
    "  config.amplification.threshold = 0.5\n"
    "  return config\n"
  )
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # as after the install
  result = subprocess.run(
    [sys.executable, "-m", "gradamp_jax.main", "--config", "mine.py", "--workdir", "run"]
    + ["--config.seed=-1"],  # refused once the file is loaded: nothing is trained
    cwd=tmp_path,
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr == "error: config.seed: must be an integer in [0, 2147483647], got -1\n"


@pytest.mark.parametrize("method", ["intelligent", "matched_random"])
@pytest.mark.parametrize("threshold", [0.0, -0.5])
def test_case_2_refuses_a_threshold_that_selects_every_layer(method, threshold):
  config = quickstart.get_config(f"method={method},case=2,threshold={threshold}")
  with pytest.raises(ValueError) as info:
    config_fields.validate_config(config)
  assert str(info.value) == (
    f"config.amplification.threshold: must be > 0 under case 2 (|Ĝ| > t), got {threshold!r}; "
    "a threshold <= 0 selects every eligible layer whatever the measure (method='all' does that)"
  )
  config.amplification.threshold = 0.01
  config_fields.validate_config(config)
  config.amplification.update(threshold=threshold, method="random")  # the threshold unread
  config_fields.validate_config(config)
  config.amplification.update(method="intelligent", action="scale_by_zscore", where="updates")
  config_fields.validate_config(config)  # every layer: the threshold unread
  assert optimizer.config_warnings(config) == []


@pytest.mark.parametrize(
  "case, threshold, warning",
  [
    (1, -0.5, "case 1 (Ĝ > t) selects every layer above the mean and those up to 0.5 std below "
     "it, not the upper tail"),
    (1, 0.0, "case 1 (Ĝ > t) selects every layer above the mean, not the upper tail"),
    (3, -1.0, "case 3 (Ĝ < -t) selects every layer below the mean and those up to 1 std above "
     "it, not the lower tail"),
    (3, 0.0, "case 3 (Ĝ < -t) selects every layer below the mean, not the lower tail"),
  ],
)  # fmt: skip
def test_a_threshold_at_or_below_zero_in_one_tail_is_named_in_one_line(case, threshold, warning):
  config = quickstart.get_config(f"case={case},threshold={threshold}")
  config_fields.validate_config(config)  # it runs
  assert optimizer.config_warnings(config) == [
    f"warning: amplification.threshold={threshold:g} under {warning}; a threshold > 0 selects "
    "the tail"
  ]
  config.amplification.threshold = 0.25
  assert optimizer.config_warnings(config) == []
