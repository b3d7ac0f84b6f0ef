"""Reading run folders and the report's statistics, against hand-computed values."""

import json
import math
import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

import gradamp_jax as ga
from gradamp_jax import analysis, jsonl, run_folder
from gradamp_jax.analysis import labels, report, statistics
from gradamp_jax.analysis import runs as ga_runs

# t_{0.975} quantiles of Student's t with 1, 2 and 3 degrees of freedom (printed tables).
T975 = {1: 12.7062047, 2: 4.30265273, 3: 3.18244631}


def write_jsonl(path, rows, tail=""):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
    f.write(tail)


def config(
  method="intelligent", seed=0, threshold=1.0, phases=((1, 0.1, 0, 1), (3, 0.1, 1, 2)), **amp
):
  base = dict(
    method=method,
    measure="G_prime",
    case=1,
    threshold=threshold,
    reselect_every=0,
    ratio=0.3,
    eligible="all",
    where="gradients",
    action="amplify",
    alpha=1.0,
    lo=0.0,
    hi=2.0,
  )
  base.update(amp)
  return dict(
    model="resnet8",
    dataset="cifar10",
    phases=[list(p) for p in phases],
    optimizer="sgd",
    seed=seed,
    validation_fraction=0.1,
    amplification=base,
  )


def epochs(test, val=None, seconds=(9.0, 2.0, 4.0)):
  rows = []
  for i, acc in enumerate(test):
    row = dict(epoch=i + 1, test_accuracy=acc, train_accuracy=acc / 2, epoch_seconds=seconds[i])
    if val is not None:
      row["val_accuracy"] = val[i]
    rows.append(row)
  return rows


# ----------------------------------------------------------------------------- reading


def test_read_jsonl_drops_a_half_written_last_line_only(tmp_path):
  path = str(tmp_path / "m.jsonl")
  write_jsonl(path, [dict(a=1), dict(a=2)], tail='{"a": 3, "b"')
  assert jsonl.read_jsonl(path) == [dict(a=1), dict(a=2)]
  assert jsonl.read_jsonl(str(tmp_path / "missing.jsonl"), missing_ok=True) == []
  with pytest.raises(FileNotFoundError):
    jsonl.read_jsonl(str(tmp_path / "missing.jsonl"))
  with open(path, "w") as f:
    f.write('{"a": 1}\n{"a": \n{"a": 3}\n')
  with pytest.raises(ValueError, match=r"m\.jsonl:2: not a JSON row"):
    jsonl.read_jsonl(path)


def test_find_runs_at_any_depth(tmp_path):
  for folder in ("a", "b/c/d", "e"):
    (tmp_path / folder).mkdir(parents=True)
    (tmp_path / folder / "config.json").write_text("{}")
  for folder in ("a", "b/c/d"):
    (tmp_path / folder / "metrics.jsonl").write_text("")
  assert run_folder.find_runs(str(tmp_path)) == [str(tmp_path / "a"), str(tmp_path / "b/c/d")]
  with pytest.raises(ValueError, match="ROOT .* is not a directory"):
    run_folder.find_runs(str(tmp_path / "nowhere"))


def test_run_row_percent_finished_and_seconds():
  metrics = pd.DataFrame(epochs([0.5, 0.75, 0.625], val=[0.4, 0.5, 0.55]))
  row = ga_runs.run_row("w", config(), metrics)
  assert row["finished"] and row["epochs"] == 3
  assert row["final_test_accuracy"] == 62.5 and row["final_val_accuracy"] == pytest.approx(55)
  assert row["best_test_accuracy"] == 75.0
  assert row["mean_epoch_seconds"] == 3.0  # epochs 2 and 3; epoch 1 compiles
  unfinished = ga_runs.run_row("w", config(), metrics.iloc[:2])
  assert not unfinished["finished"] and unfinished["epochs"] == 2
  assert math.isnan(unfinished["final_test_accuracy"])
  no_val = ga_runs.run_row("w", config(), pd.DataFrame(epochs([0.5, 0.75, 0.625])))
  assert no_val["final_test_accuracy"] == 62.5 and math.isnan(no_val["final_val_accuracy"])
  empty = ga_runs.run_row("w", config(), pd.DataFrame())
  assert not empty["finished"] and empty["epochs"] == 0


APPLIES_ACTION = ("intelligent", "matched_random", "random", "all")


def test_keys_that_do_not_apply_are_empty():
  keys = {m: ga_runs.run_keys(config(m)) for m in ga_runs.APPLIES}
  assert keys["none"] == dict(
    model="resnet8",
    dataset="cifar10",
    optimizer="sgd",
    method="none",
    where=None,
    action=None,
    action_params=None,
    measure=None,
    case=None,
    threshold=None,
    reselect_every=None,
    ratio=None,
    seed=0,
  )
  assert {keys[m]["action"] for m in APPLIES_ACTION} == {"amplify"}
  assert {keys[m]["where"] for m in APPLIES_ACTION} == {"gradients"}
  assert (keys["random"]["ratio"], keys["random"]["threshold"]) == (0.3, None)
  assert keys["random"]["measure"] is None and keys["all"]["ratio"] is None
  assert keys["all"]["reselect_every"] == 0
  for method in ("intelligent", "matched_random"):
    assert (
      keys[method]["measure"],
      keys[method]["case"],
      keys[method]["threshold"],
      keys[method]["ratio"],
    ) == ("G_prime", 1, 1.0, None)


def test_load_runs_tolerates_unfinished_and_half_written_runs(tmp_path):
  good = tmp_path / "sweep" / "none-0"
  write_jsonl(str(good / "metrics.jsonl"), epochs([0.5, 0.6, 0.7]))
  (good / "config.json").write_text(json.dumps(config("none")))
  cut = tmp_path / "deep" / "er" / "intelligent-0"
  write_jsonl(str(cut / "metrics.jsonl"), epochs([0.5, 0.6]), tail='{"epoch": 3, "te')
  (cut / "config.json").write_text(json.dumps(config()))
  broken = tmp_path / "broken"
  write_jsonl(str(broken / "metrics.jsonl"), [])
  (broken / "config.json").write_text('{"model": "res')  # killed while writing
  runs = analysis.load_runs(str(tmp_path)).set_index("workdir")
  assert list(runs.reset_index().columns) == list(ga_runs.RUN_COLUMNS)
  assert runs.loc[str(good), "finished"] and runs.loc[str(good), "final_test_accuracy"] == 70
  assert not runs.loc[str(cut), "finished"] and runs.loc[str(cut), "epochs"] == 2
  assert not runs.loc[str(broken), "finished"] and runs.loc[str(broken), "epochs"] == 0
  assert analysis.summarize(runs.reset_index())["n"].tolist() == [1]


# ----------------------------------------------------------------------------- statistics


def test_sample_std_and_t_interval_by_hand():
  assert statistics.sample_std([1.0, 2.0, 4.0]) == pytest.approx(math.sqrt(7 / 3))
  assert math.isnan(statistics.sample_std([3.0]))
  values = [1.0, 2.0, 4.0]
  mean, low, high = statistics.t_interval(values)
  half = T975[2] * math.sqrt(7 / 3) / math.sqrt(3)
  assert (mean, low, high) == pytest.approx((7 / 3, 7 / 3 - half, 7 / 3 + half))
  mean, low, high = statistics.t_interval([-1.0, 3.0])
  assert (mean, low, high) == pytest.approx((1.0, 1 - T975[1] * 2, 1 + T975[1] * 2))
  mean, low, high = statistics.t_interval([2.5])
  assert mean == 2.5 and math.isnan(low) and math.isnan(high)
  low99 = statistics.t_interval([1.0, 2.0, 4.0, 4.5], confidence=0.99)[1]
  want = scipy_stats.t.interval(0.99, 3, loc=2.875, scale=scipy_stats.sem([1, 2, 4, 4.5]))
  assert low99 == pytest.approx(want[0])


def runs_frame(rows):
  """A runs table from (method, threshold, seed, test %, val % or None[, extra keys])."""
  out = []
  for method, threshold, seed, test, val, *extra in rows:
    keys = ga_runs.run_keys(config(method, seed, threshold, **(extra[0] if extra else {})))
    out.append(
      dict(
        workdir=f"{method}-{threshold}-{seed}",
        **keys,
        finished=True,
        epochs=3,
        final_test_accuracy=test,
        final_val_accuracy=val,
        best_test_accuracy=test,
        mean_epoch_seconds=10.0,
      )
    )
  return ga_runs.typed_frame(pd.DataFrame(out, columns=list(ga_runs.RUN_COLUMNS)))


def test_summarize_groups_over_seeds():
  runs = runs_frame(
    [
      ("none", 0, 0, 90.0, 80.0),
      ("none", 0, 1, 92.0, 82.0),
      ("intelligent", 1.0, 0, 93.0, 81.0),
      ("intelligent", 1.0, 1, 96.0, None),
      ("intelligent", 1.5, 0, 91.0, 85.0),
    ]
  )
  summary = analysis.summarize(runs)
  assert list(summary.columns) == list(ga_runs.SUMMARY_COLUMNS)
  none, t10, t15 = (summary.iloc[i] for i in range(3))
  assert none["method"] == "none" and pd.isna(none["threshold"]) and pd.isna(none["measure"])
  assert (none["n"], none["test_mean"], none["test_best"], none["val_mean"]) == (
    2,
    91.0,
    92.0,
    81.0,
  )
  assert none["test_std"] == pytest.approx(np.std([90, 92], ddof=1))
  assert t10["threshold"] == 1.0 and t10["test_mean"] == 94.5
  assert pd.isna(t10["val_mean"])  # one run without validation accuracy
  assert t15["n"] == 1 and pd.isna(t15["test_std"]) and t15["val_mean"] == 85.0


def test_choose_setting_ties_to_the_smaller_and_falls_back_to_test():
  groups = pd.DataFrame(
    dict(threshold=[1.5, 1.0, 2.0], val_mean=[80.0, 80.0, 79.0], test_mean=[90.0, 91.0, 95.0])
  )
  choose = lambda: statistics.choose_setting(groups, ("threshold",))
  assert choose() == ({"threshold": 1.0}, "validation")
  groups.loc[2, "val_mean"] = np.nan
  assert choose() == ({"threshold": 2.0}, "test")
  groups["test_mean"] = [95.0, 90.0, 95.0]
  assert choose() == ({"threshold": 1.5}, "test")


def test_compare_pairs_by_seed_at_the_chosen_threshold():
  runs = runs_frame(
    [("none", 0, s, t, v) for s, t, v in ((0, 90.0, 80.0), (1, 92.0, 81.0), (2, 91.0, 80.0))]
    # threshold 1.0 wins on validation (mean 82), 1.5 on test (mean 96)
    + [("intelligent", 1.0, s, t, 82.0) for s, t in ((0, 91.0), (1, 95.0), (2, 93.0))]
    + [("intelligent", 1.5, s, t, 81.0) for s, t in ((0, 97.0), (1, 95.0))]
    # its own best validation threshold is 1.5, but it follows intelligent's choice
    + [
      ("matched_random", 1.0, 0, 89.0, 70.0),
      ("matched_random", 1.0, 1, 90.0, 70.0),
      ("matched_random", 1.5, 0, 99.0, 90.0),
    ]
    + [("random", None, 0, 88.0, None), ("random", None, 5, 80.0, None)]
    + [("all", None, 1, 93.5, 83.0)]
  )
  table = analysis.compare(runs)
  assert list(table.columns) == list(ga_runs.COMPARISON_COLUMNS)
  assert table["method"].tolist() == ["none", "all", "random", "intelligent", "matched_random"]
  rows = table.set_index("method")
  none = rows.loc["none"]
  assert none["n"] == 3 and none["test_mean"] == 91.0 and pd.isna(none["reselect_every"])
  assert none["test_std"] == pytest.approx(1.0) and pd.isna(none["diff_mean"])

  smart = rows.loc["intelligent"]
  assert (smart["chosen_threshold"], smart["chosen_by"], smart["n"]) == (1.0, "validation", 3)
  assert smart["test_mean"] == 93.0 and smart["paper_best"] == 97.0
  diffs = np.array([91 - 90, 95 - 92, 93 - 91], float)  # 1, 3, 2
  half = T975[2] * np.std(diffs, ddof=1) / math.sqrt(3)
  assert (smart["diff_mean"], smart["diff_ci_low"], smart["diff_ci_high"]) == pytest.approx(
    (2.0, 2.0 - half, 2.0 + half)
  )

  matched = rows.loc["matched_random"]
  assert (matched["chosen_threshold"], matched["chosen_by"]) == (1.0, "validation")
  assert matched["test_mean"] == 89.5 and matched["paper_best"] == 99.0
  assert matched["diff_mean"] == pytest.approx(-1.5)  # seeds 0, 1: -1 and -2
  assert matched["diff_ci_low"] == pytest.approx(
    -1.5 - T975[1] * np.std([-1, -2], ddof=1) / math.sqrt(2)
  )

  random = rows.loc["random"]  # seed 5 has no partner: one pair, no interval
  assert pd.isna(random["chosen_threshold"]) and pd.isna(random["measure"])
  assert random["n"] == 2 and random["diff_mean"] == -2.0 and pd.isna(random["diff_ci_low"])
  assert rows.loc["all", "diff_mean"] == pytest.approx(1.5)
  assert pd.isna(rows.loc["all", "test_std"])


def test_matched_random_not_run_at_the_intelligent_choice_chooses_its_own():
  runs = runs_frame(
    [("none", 0, s, 90.0, 80.0) for s in (0, 1)]
    + [("intelligent", 0.5, s, 92.0, 85.0) for s in (0, 1)]  # chosen: 0.5
    + [("intelligent", 1.0, s, 91.0, 84.0) for s in (0, 1)]
    + [("matched_random", 1.0, 0, 89.0, 70.0), ("matched_random", 1.0, 1, 93.0, 70.0)]
  )
  rows = analysis.compare(runs).set_index("method")
  assert rows.loc["intelligent", "chosen_threshold"] == 0.5
  matched = rows.loc["matched_random"]
  assert (matched["chosen_threshold"], matched["n"], matched["test_mean"]) == (1.0, 2, 91.0)
  assert matched["diff_mean"] == pytest.approx(1.0)  # -1 and +3


def test_an_action_parameter_is_chosen_like_a_threshold_and_kept_apart_in_groups():
  zscore = dict(action="scale_by_zscore", where="updates")
  runs = runs_frame(
    [("none", 0, s, 90.0, 80.0) for s in (0, 1)]
    # alpha 1 wins on validation (mean 84), alpha 0.5 on test (mean 95)
    + [("intelligent", 1.0, s, t, 84.0, dict(zscore, alpha=1.0)) for s, t in ((0, 91.0), (1, 93.0))]
    + [("intelligent", 1.0, s, 95.0, 83.0, dict(zscore, alpha=0.5)) for s in (0, 1)]
    + [("intelligent", 1.0, s, 92.0, 81.0) for s in (0, 1)]  # amplify: its own family
  )
  assert (
    runs["action_params"].tolist()[2:]
    == ["alpha=1 hi=2 lo=0"] * 2 + ["alpha=0.5 hi=2 lo=0"] * 2 + [None] * 2
  )
  assert runs["threshold"].isna().tolist()[2:] == [True] * 4 + [False] * 2  # no threshold
  summary = analysis.summarize(runs)
  assert len(summary) == 4 and not ga_runs.group_conflicts(runs)
  table = analysis.compare(runs)
  row = table[table["action"] == "scale_by_zscore"].iloc[0]
  assert (row["chosen_params"], row["chosen_by"], row["n"]) == (
    "alpha=1 hi=2 lo=0",
    "validation",
    2,
  )
  assert pd.isna(row["chosen_threshold"]) and row["test_mean"] == 92.0
  assert row["diff_mean"] == 2.0 and row["paper_best"] == 95.0
  assert labels.setting_text(row) == "alpha=1 hi=2 lo=0"
  assert sorted(statistics.chosen_runs(runs, row)["final_test_accuracy"]) == [91.0, 93.0]
  amplify = table[table["action"] == "amplify"].iloc[0]
  assert (amplify["chosen_threshold"], amplify["n"]) == (1.0, 2) and pd.isna(
    amplify["chosen_params"]
  )
  assert labels.setting_text(amplify) == "t=1"


def test_compare_chooses_on_test_when_a_run_lacks_validation():
  runs = runs_frame(
    [
      ("none", 0, 0, 90.0, None),
      ("intelligent", 1.0, 0, 91.0, 85.0),
      ("intelligent", 2.0, 0, 94.0, None),
    ]
  )
  row = analysis.compare(runs).set_index("method").loc["intelligent"]
  assert (row["chosen_threshold"], row["chosen_by"], row["test_mean"]) == (2.0, "test", 94.0)


def test_optimizers_have_their_own_baseline_and_placements_their_own_families():
  runs = runs_frame(
    [("none", 0, s, t, None) for s, t in ((0, 90.0), (1, 92.0))]
    + [("none", 0, s, t, None) for s, t in ((0, 80.0), (1, 82.0))]
    + [("intelligent", 1.0, s, t, None, dict(where="gradients")) for s, t in ((0, 81.0), (1, 83.0))]
    + [("intelligent", 1.0, s, t, None, dict(where="updates")) for s, t in ((0, 84.0), (1, 87.0))]
  )
  runs.loc[2:, "optimizer"] = "adamw"
  table = analysis.compare(runs)
  none = table[table["method"] == "none"].set_index("optimizer")
  assert none.loc["sgd", "test_mean"] == 91.0 and none.loc["adamw", "test_mean"] == 81.0
  smart = table[table["method"] == "intelligent"].set_index("where")
  assert (smart["optimizer"] == "adamw").all()
  assert smart.loc["gradients", "diff_mean"] == pytest.approx(1.0)  # against adamw's none
  assert smart.loc["updates", "diff_mean"] == pytest.approx(4.5)
  names = [labels.family_label(r) for _, r in table.iterrows()]
  assert "G′ c1" in names and "G′ c1 (updates)" in names


def test_compare_leaves_out_unfinished_runs_and_keeps_settings_apart():
  runs = runs_frame(
    [
      ("none", 0, 0, 90.0, None),
      ("intelligent", 1.0, 0, 91.0, None),
      ("intelligent", 1.0, 0, 70.0, None, dict(reselect_every=2)),
      ("intelligent", 2.0, 0, 99.0, None),
    ]
  )
  runs.loc[3, "finished"] = False
  table = analysis.compare(runs)
  smart = table[table["method"] == "intelligent"].set_index("reselect_every")
  assert smart.loc[0, "test_mean"] == 91.0 and smart.loc[0, "paper_best"] == 91.0
  assert smart.loc[2, "test_mean"] == 70.0 and smart.loc[2, "diff_mean"] == -20.0


def test_epoch_times_overhead_percent():
  runs = runs_frame(
    [
      ("none", 0, 0, 90.0, None),
      ("none", 0, 1, 90.0, None),
      ("intelligent", 1.0, 0, 90.0, None),
      ("intelligent", 2.0, 0, 90.0, None),
    ]
  )
  runs["mean_epoch_seconds"] = [10.0, 12.0, 11.0, 12.1]
  table = analysis.epoch_times(runs)
  assert list(table.columns) == list(ga_runs.EPOCH_TIME_COLUMNS)
  table = table.set_index("method")
  assert table.loc["none", "seconds_mean"] == 11.0 and table.loc["none", "overhead_percent"] == 0
  assert table.loc["intelligent", "seconds_mean"] == pytest.approx(11.55)
  assert table.loc["intelligent", "overhead_percent"] == pytest.approx(5.0)
  assert table.loc["intelligent", "seconds_std"] == pytest.approx(np.std([11, 12.1], ddof=1))
  assert (table["note"] == "").all()


def test_timed_epochs_are_a_runs_own_past_each_starts_first():
  seconds = [90.0, 50.0, 60.0, 95.0, 70.0, 80.0]
  rows = [dict(epoch=e, epoch_seconds=s, test_accuracy=0.5) for e, s in enumerate(seconds, 1)]
  old = pd.DataFrame(rows)  # written before starts were marked
  assert ga_runs.timed_epochs(old).tolist() == [50, 60, 95, 70, 80]  # epoch 1 left out
  assert ga_runs.timed_epochs(old, forked_at=2).tolist() == [95, 70, 80]  # 1-2 copied
  marked = pd.DataFrame(
    [dict(r, first_epoch_after_start=r["epoch"] in (1, 4)) for r in rows]  # resumed at 4
  )
  assert ga_runs.timed_epochs(marked).tolist() == [50, 60, 70, 80]
  assert ga_runs.timed_epochs(marked, forked_at=5).tolist() == []  # its only epoch warms up
  row = ga_runs.run_row("w", config(phases=((6, 0.1, 0, 1),)), marked, forked_at=5)
  assert row["timed_epochs"] == 0 and math.isnan(row["mean_epoch_seconds"])


def test_epoch_times_leave_out_untimed_runs_and_other_machines_and_say_why():
  runs = runs_frame(
    [
      ("none", 0, 0, 90.0, None),
      ("none", 0, 1, 90.0, None),
      ("intelligent", 1.0, 0, 90.0, None),
      ("intelligent", 1.0, 1, 90.0, None),
      ("random", None, 0, 90.0, None),
    ]
  )
  runs["mean_epoch_seconds"] = [10.0, 12.0, 13.0, np.nan, 11.0]  # seed 1 forked at its end
  runs["machine"] = ["A, 1× cpu", "A, 1× cpu", "A, 1× cpu", "A, 1× cpu", "B, 1× cpu"]
  table = analysis.epoch_times(runs).set_index("method")
  intelligent, random = table.loc["intelligent"], table.loc["random"]
  assert intelligent["n"] == 1 and intelligent["seconds_mean"] == 13.0
  assert intelligent["overhead_percent"] == pytest.approx(100 * (13 / 11 - 1))
  assert intelligent["note"].startswith("1 of 2 runs untimed: no epoch of their own")
  assert random["seconds_mean"] == 11.0 and math.isnan(random["overhead_percent"])
  assert random["note"] == (
    "overhead left out: timed on other machines than none (A, 1× cpu; B, 1× cpu)"
  )
  markdown = report.time_tables(analysis.epoch_times(runs))
  assert "13.00 (+18.2 %) (n=1)" in markdown and "11.00 (n=1)" in markdown
  assert "- resnet8, sgd, random: overhead left out: timed on other machines" in markdown


# ----------------------------------------------------------------------------- layers


def test_the_analysis_z_score_matches_numpy_and_guards_equal_values():
  # measure_agreement selects with the method's own z-score (gradamp_jax.normalize).
  values, everyone = np.array([0.2, 0.5, 0.9, 0.4]), np.ones(4, bool)
  np.testing.assert_allclose(
    ga.normalize(values, everyone), (values - values.mean()) / values.std(ddof=0), atol=1e-6
  )
  np.testing.assert_array_equal(ga.normalize([0.3, 0.3, 0.3 + 1e-8], everyone[:3]), [0, 0, 0])


def test_selection_tables_and_overlap():
  def stats(selected, by_measure=None):
    rows = []
    for epoch, picks in selected.items():
      for i, layer in enumerate(("conv", "bn", "fc")):
        row = dict(epoch=epoch, layer=layer, selected=bool(picks[i]), eligible=i < 2 or epoch == 2)
        if by_measure is not None:
          row["selected_by_measure"] = bool(by_measure[epoch][i])
        rows.append(row)
    return pd.DataFrame(rows)

  a = stats({2: (1, 0, 1), 5: (0, 1, 0)}, by_measure={2: (1, 1, 0), 5: (0, 1, 0)})
  b = stats({2: (1, 1, 0), 5: (0, 0, 0)})
  assert analysis.selection_table(a).to_numpy().tolist() == [[1, 0], [0, 1], [1, 0]]
  frequency = statistics.selection_frequency([a, b])
  assert list(frequency.index) == ["conv", "bn", "fc"]
  np.testing.assert_array_equal(frequency.to_numpy(), [[1, 0], [0.5, 0.5], [0.5, 0]])
  counts = analysis.selected_counts(a)
  assert counts.to_dict("list") == dict(
    epoch=[2, 5], selected=[2, 1], eligible=[3, 2], by_measure=[2, 1], overlap=[1, 1]
  )
  assert "overlap" not in analysis.selected_counts(b)


def directionality_rows(epoch, g, g_prime, eligible=None):
  names = ["conv1", "bn1", "layer1/conv", "fc"]
  return [
    dict(
      epoch=epoch,
      layer=names[i],
      index=i,
      G=g[i],
      G_prime=g_prime[i],
      eligible=True if eligible is None else eligible[i],
    )
    for i in range(len(g))
  ]


def test_directionality_table_in_network_order_mean_over_runs():
  a = pd.DataFrame(
    directionality_rows(1, [0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])
    + directionality_rows(2, [0.2, 0.2, 0.2, 0.2], [0.1, 0.1, 0.1, 0.1])
  )
  b = a.assign(G=a["G"] + 0.1)
  table = statistics.directionality_table([a.iloc[::-1], b], "G")  # row order does not matter
  assert list(table.index) == ["conv1", "bn1", "layer1/conv", "fc"]
  np.testing.assert_allclose(table[1], [0.15, 0.25, 0.35, 0.45])
  np.testing.assert_allclose(table[2], [0.25] * 4)
  with pytest.raises(ValueError, match="measure='g'"):
    statistics.directionality_table([a], "g")


def test_measure_agreement_by_hand():
  frame = pd.DataFrame(
    directionality_rows(1, [0.1, 0.2, 0.3, 0.9], [0.2, 0.3, 0.4, 0.8])
    + directionality_rows(
      2, [0.1, 0.2, 0.3, 0.9], [0.9, 0.3, 0.2, 0.1], eligible=[True, True, True, False]
    )
  )
  table = analysis.measure_agreement(frame, case=1, threshold=1.0)
  # Epoch 1: same ranks; z of [0.1, 0.2, 0.3, 0.9] = [-0.85, -0.51, -0.17, 1.53]: only fc.
  first = table.iloc[0]
  assert (first["layers"], first["spearman"]) == (4, pytest.approx(1.0))
  assert (first["selected_G"], first["selected_G_prime"], first["both"]) == (1, 1, 1)
  # Epoch 2: fc not eligible; reversed ranks over the other three.
  second = table.iloc[1]
  assert (second["layers"], second["spearman"]) == (3, pytest.approx(-1.0))
  # z of [0.1, 0.2, 0.3] = [-1.22, 0, 1.22]; of [0.9, 0.3, 0.2]: [1.40, -0.55, -0.85].
  assert (second["selected_G"], second["selected_G_prime"], second["both"]) == (1, 1, 0)
  case2 = analysis.measure_agreement(frame, case=2, threshold=1.0).iloc[1]
  assert (case2["selected_G"], case2["selected_G_prime"], case2["both"]) == (2, 1, 1)
  message = r"case must be one of 1 \(upper tail: Ĝ > t\), 2 \(two-sided: \|Ĝ\| > t\), 3 \(lower"
  with pytest.raises(ValueError, match=message):
    analysis.measure_agreement(frame, case=4)


def test_intelligent_against_matched_random_pairs_by_seed_at_each_threshold():
  runs = runs_frame(
    [("intelligent", 1.0, s, test, None) for s, test in ((0, 60.0), (1, 62.0), (2, 61.0))]
    + [("matched_random", 1.0, s, test, None) for s, test in ((0, 59.0), (1, 61.5), (3, 70.0))]
    + [("intelligent", 2.0, 0, 58.0, None), ("matched_random", 2.0, 0, 57.0, None)]
    + [("intelligent", 0.5, 0, 58.0, None), ("none", 0, 0, 50.0, None)]  # no control at 0.5
  )
  table = statistics.against_matched(runs)
  assert table["threshold"].tolist() == [1.0, 2.0] and table["n"].tolist() == [2, 1]
  # Seeds 0 and 1 only: differences 1.0 and 0.5, mean 0.75, s = 0.3536, t(0.975, 1) = 12.706
  half = 12.7062047 * np.std([1.0, 0.5], ddof=1) / np.sqrt(2)
  np.testing.assert_allclose(
    table.iloc[0][["diff_mean", "diff_ci_low", "diff_ci_high"]].to_numpy(float),
    [0.75, 0.75 - half, 0.75 + half],
    rtol=1e-6,
  )
  assert table.iloc[1]["diff_mean"] == 1.0 and pd.isna(table.iloc[1]["diff_ci_low"])
  text = report.matched_table(table)
  assert "| G′ c1 | 1 | 2 | +0.75 [" in text and "| G′ c1 | 2 | 1 | +1.00 |" in text


def test_mean_curves_over_runs(tmp_path):
  for seed, accs in ((0, [0.5, 0.7]), (1, [0.3, 0.5])):
    write_jsonl(str(tmp_path / str(seed) / "metrics.jsonl"), epochs(accs))
  metrics = [analysis.read_frame(str(tmp_path / s), "metrics.jsonl") for s in ("0", "1")]
  curves = statistics.mean_curves(metrics)
  assert curves["epoch"].tolist() == [1, 2] and curves["n"].tolist() == [2, 2]
  np.testing.assert_allclose(curves["test_accuracy"], [40.0, 60.0])
  np.testing.assert_allclose(curves["train_accuracy"], [20.0, 30.0])


def test_threshold_figure_draws_the_summary():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from gradamp_jax.analysis import figures

  runs = runs_frame(
    [("none", 0, 0, 90.0, None), ("none", 0, 1, 92.0, None)]
    + [("intelligent", t, s, 90 + t + s, None) for t in (1.0, 1.5) for s in (0, 1)]
    + [("matched_random", 1.0, 0, 89.0, None), ("random", None, 0, 88.0, None)]
  )
  ax = figures.plot_threshold_curves(analysis.summarize(runs))
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == [
    "none, mean ± std (91.00, n=2)",
    "random (88.00, n=1)",
    "G′ c1 (n=2)",
    "matched G′ c1 (n=1)",
  ]
  line = ax.containers[0]  # the intelligent curve: means at 1.0 and 1.5
  np.testing.assert_allclose(np.asarray(line.lines[0].get_ydata(), float), [91.5, 92.0])
  band = [p for p in ax.patches][0].get_extents()
  assert band.height > 0  # the none mean ± std band
  plt.close("all")


def test_the_threshold_figure_keeps_its_legend_off_the_data_and_names_n_per_point():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from gradamp_jax.analysis import figures

  thresholds = (0.5, 1.0, 1.5, 2.0)
  runs = runs_frame(
    [("none", 0, s, 60.0 + s, None) for s in range(5)]
    + [("all", None, s, 61.0, None) for s in range(5)]
    + [("intelligent", t, s, 60.0 + t, None) for t in thresholds for s in range(5) if t + s < 6]
    + [("matched_random", t, s, 59.0 + t, None) for t in (1.0, 2.0) for s in range(5)]
  )
  fig = figures.threshold_figure(analysis.summarize(runs), "resnet8", "cifar10", 0)
  fig.tight_layout()
  fig.canvas.draw()
  ax = fig.axes[0]
  legend = [t.get_text() for t in ax.get_legend().get_texts()]
  assert legend == [
    "none, mean ± std (62.00, n=5)",
    "all (61.00, n=5)",
    "G′ c1 (n=4–5)",  # the seed 4 run at t=2 is missing
    "matched G′ c1 (n=5)",
  ]
  assert [a.get_text() for a in ax.texts] == ["n=4"]  # the point that has fewer runs
  intelligent, matched = (c.lines[0] for c in ax.containers)
  # Two families nudged apart, each by 0.6 % of the thresholds' range (1.5), ticks unmoved.
  np.testing.assert_allclose(intelligent.get_xdata(), np.array(thresholds) - 0.009)
  np.testing.assert_allclose(matched.get_xdata(), [1.009, 2.009])
  assert list(ax.get_xticks()) == list(thresholds) and matched.get_linestyle() == "--"
  assert matched.get_color() == intelligent.get_color()
  renderer = fig.canvas.get_renderer()
  legend_box, axes_box = ax.get_legend().get_window_extent(renderer), ax.get_window_extent()
  assert legend_box.x0 >= axes_box.x1  # beside the data, not over it
  assert legend_box.x1 <= fig.bbox.x1 + 1  # and inside the figure
  width, height = fig.get_size_inches() * 110  # the report's dpi
  assert width <= 1400 and height <= 1400
  assert axes_box.width >= 0.5 * fig.bbox.width  # the data keeps most of the figure
  plt.close("all")


def test_a_single_threshold_is_drawn_as_one_point_per_family():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from gradamp_jax.analysis import figures

  runs = runs_frame(
    [("none", 0, s, 90.0, None) for s in (0, 1)]
    + [("intelligent", 1.0, s, 91.0 + s, None) for s in (0, 1)]
    + [("intelligent", 1.0, s, 93.0, None, dict(measure="G")) for s in (0, 1)]
    + [("matched_random", 1.0, 0, 89.0, None)]
  )
  _, ax = plt.subplots()
  figures.plot_threshold_curves(analysis.summarize(runs), ax=ax)
  names = [t.get_text() for t in ax.get_xticklabels()]
  assert names == ["G c1", "G′ c1", "matched G′ c1"]  # not 0.96, 0.98, ... around t=1
  assert ax.get_xlim() == (-0.5, 2.5) and "threshold 1" in ax.get_xlabel()
  points = [c.lines[0] for c in ax.containers]
  assert [list(p.get_xdata()) for p in points] == [[0], [1], [2]]
  assert [list(p.get_ydata()) for p in points] == [[93.0], [91.5], [89.0]]
  assert all(p.get_linestyle() == "None" for p in points)
  assert [p.get_marker() for p in points] == ["o", "o", "s"]  # matched random: squares
  two = runs_frame([("intelligent", t, 0, 90.0 + t, None) for t in (1.0, 2.0)])
  _, ax = plt.subplots()
  figures.plot_threshold_curves(analysis.summarize(two), ax=ax)
  assert list(ax.containers[0].lines[0].get_xdata()) == [1.0, 2.0]  # a threshold axis
  assert ax.get_xlabel() == "threshold on the normalized measure"
  plt.close("all")


def test_every_training_curve_shows_on_integer_epochs():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  from matplotlib.colors import to_hex

  from gradamp_jax.analysis import figures

  same = pd.DataFrame(dict(epoch=[1, 2], n=2, train_accuracy=[20.0, 30.0], test_accuracy=[25, 35]))
  ax = figures.plot_training_curves({"none": same, "all": same.copy()})
  none, all_ = (line for line in ax.get_lines() if " test " in line.get_label())
  assert none.get_marker() != all_.get_marker()  # the same points, two shapes
  assert {none.get_markerfacecolor(), all_.get_markerfacecolor()} == {"none"}  # hollow
  assert none.get_zorder() > all_.get_zorder()  # the first listed is drawn on top
  lo, hi = ax.get_xlim()
  assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1, 2]  # no 1.25, 1.5, ...
  runs = analysis.load_runs(QUICKSTART_SWEEP)  # 11 configurations over 3 epochs
  fig = figures.curves_figure(runs, analysis.compare(runs), "resnet8", "cifar10", 0)
  tests = [line for line in fig.axes[0].get_lines() if " test " in line.get_label()]
  styles = {(to_hex(line.get_color()), line.get_marker()) for line in tests}
  assert len(tests) == 11 and len(styles) == 11
  assert "None" not in {marker for _, marker in styles}
  lo, hi = fig.axes[0].get_xlim()
  assert [t for t in fig.axes[0].get_xticks() if lo <= t <= hi] == [1, 2, 3]
  plt.close("all")


def test_group_conflicts_name_repeated_seeds_and_differing_fields(tmp_path):
  def run(name, cfg):
    write_jsonl(str(tmp_path / name / "metrics.jsonl"), epochs([0.5, 0.6, 0.7]))
    (tmp_path / name / "config.json").write_text(json.dumps(cfg))

  run("a", config(seed=0))
  run("b", config(seed=1, eligible="kernels"))
  run("c", config(seed=1, phases=((1, 0.1, 0, 1), (2, 0.1, 1, 2), (3, 0.01, 1, 2))))
  run("n0", config("none", seed=0, measure="G"))  # measure does not apply to none
  run("n1", dict(config("none", seed=1), image_folder="/data/a"))  # data location may differ
  problems = ga_runs.group_conflicts(analysis.load_runs(str(tmp_path)))
  assert problems == [
    "model=resnet8, dataset=cifar10, optimizer=sgd, method=intelligent, where=gradients, "
    "action=amplify, measure=G_prime, case=1, threshold=1.0, reselect_every=0: seed 1 occurs "
    "more than once",
    "model=resnet8, dataset=cifar10, optimizer=sgd, method=intelligent, where=gradients, "
    "action=amplify, measure=G_prime, case=1, threshold=1.0, reselect_every=0: runs pooled "
    "over seeds differ in amplification.eligible, phases",
  ]


def test_random_at_several_ratios_is_chosen_like_a_threshold():
  runs = runs_frame(
    [
      ("none", 0, 0, 90.0, 80.0),
      ("random", None, 0, 91.0, 82.0, dict(ratio=0.3)),
      ("random", None, 0, 95.0, 81.0, dict(ratio=0.5)),
    ]
  )
  row = analysis.compare(runs).set_index("method").loc["random"]
  assert (row["chosen_by"], row["n"], row["test_mean"], row["paper_best"]) == (
    "validation",
    1,
    91.0,
    95.0,
  )
  assert pd.isna(row["chosen_threshold"]) and row["diff_mean"] == 1.0


def test_load_run_names_a_folder_that_is_not_a_run(tmp_path):
  with pytest.raises(ValueError, match=r"'.*nope' \(.*\) does not exist"):
    analysis.load_run(str(tmp_path / "nope"))
  with pytest.raises(ValueError, match="holds no config.json"):
    analysis.load_run(str(tmp_path))


QUICKSTART_SWEEP = os.path.join(
  os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", "quickstart-sweep"
)


def overlapping_axes(fig) -> list:
  """Pairs of visible axes (colour bars included) whose drawn extents, tick labels and axis
  labels included, overlap by more than a pixel each way."""
  renderer = fig.canvas.get_renderer()
  boxes = [(ax, ax.get_tightbbox(renderer)) for ax in fig.axes if ax.get_visible()]
  pairs = []
  for i, (a, box_a) in enumerate(boxes):
    for b, box_b in boxes[i + 1 :]:
      width = min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0)
      height = min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0)
      if width > 1 and height > 1:
        pairs.append((a.get_title() or a.get_ylabel(), b.get_title() or b.get_ylabel()))
  return pairs


def test_the_report_heatmaps_are_readable_grids_with_one_scale_per_bound():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  from gradamp_jax.analysis import figures

  runs = analysis.load_runs(QUICKSTART_SWEEP)  # 11 runs of the shipped quickstart sweep
  comparison = analysis.compare(runs)
  selection = figures.selection_figure(runs, comparison, "resnet8", "cifar10", 0)
  panels = [ax for ax in selection.axes if ax.images and ax.get_title()]
  assert len(panels) == 9
  assert len({round(ax.get_position().x0, 3) for ax in panels}) == figures.MAX_COLUMNS
  selection.canvas.draw()
  width, height = selection.get_size_inches() * 110  # the report's dpi
  assert width <= 1400 and height <= 1400
  assert overlapping_axes(selection) == []
  frames = [
    analysis.read_frame(w, "directionality.jsonl")
    for w in runs[runs["method"] == "none"]["workdir"]
  ]
  heatmap = figures.directionality_figure(frames, "none")
  heatmap.canvas.draw()
  assert overlapping_axes(heatmap) == []
  drawn = {ax.get_title(): ax.images[0] for ax in heatmap.axes if ax.images}
  assert set(drawn) == {"G (eq. 4)", "G′ (eq. 7)"}
  largest = max(np.nanmax(image.get_array()) for image in drawn.values())
  assert largest < 0.5  # the values of this run: a [0, 1] scale would flatten them
  for image in drawn.values():  # one scale, from 0 to the largest value drawn
    assert image.norm.vmin == 0 and image.norm.vmax == pytest.approx(largest)
  plt.close("all")
