"""``python -m gradamp_jax.report`` on a small real sweep (tests/mock_sweep.py)."""

import json
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pandas as pd
import pytest
from mock_sweep import copy_sweep

from gradamp_jax import analysis, run_folder
from gradamp_jax.analysis import report, statistics
from gradamp_jax.analysis import runs as ga_runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def last_row(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return json.loads(f.read().splitlines()[-1])


@pytest.fixture(scope="module")
def reported(mock_sweep, tmp_path_factory):
  root = copy_sweep(mock_sweep, tmp_path_factory.mktemp("r") / "sweep")
  out = str(tmp_path_factory.mktemp("report"))
  assert report.main([root, "--out", out]) == 0
  return root, out


def test_report_writes_every_file(reported):
  _, out = reported
  tag = "resnet8_cifar10_reselect0"
  assert sorted(os.listdir(out)) == sorted(
    [
      "runs.csv",
      "summary.csv",
      "comparison.csv",
      "epoch_times.csv",
      "matched.csv",
      "report.md",
      f"threshold_{tag}.png",
      f"selected_layers_{tag}.png",
      f"curves_{tag}.png",
      f"selection_{tag}.png",
      "directionality_resnet8_cifar10.png",
    ]
  )
  for name in os.listdir(out):
    if name.endswith(".png"):
      assert open(os.path.join(out, name), "rb").read(8) == PNG_MAGIC
  text = open(os.path.join(out, "report.md")).read()
  for name in os.listdir(out):
    if name.endswith(".png"):
      assert f"]({name})" in text
  assert "\n12 runs, all finished.\n" in text and "left out of every statistic" not in text
  assert "chosen on: validation" in text and "(n=2)" in text
  assert "Check these groups" not in text
  matched = pd.read_csv(os.path.join(out, "matched.csv"))  # intelligent at 0.5 against its control
  assert matched["threshold"].tolist() == [0.5] and matched["n"].tolist() == [2]
  runs = pd.read_csv(os.path.join(out, "runs.csv")).set_index(["method", "threshold", "seed"])
  diffs = [
    runs.loc[("intelligent", 0.5, s), "final_test_accuracy"]
    - runs.loc[("matched_random", 0.5, s), "final_test_accuracy"]
    for s in (0, 1)
  ]
  assert matched["diff_mean"].iloc[0] == pytest.approx(np.mean(diffs), abs=1e-4)
  assert "## Intelligent against matched random, paired by seed" in text


def test_runs_csv_against_the_run_files(reported):
  root, out = reported
  runs = pd.read_csv(os.path.join(out, "runs.csv"))
  assert list(runs.columns) == list(ga_runs.RUN_COLUMNS)
  assert len(runs) == 12 and runs["finished"].all() and (runs["epochs"] == 3).all()
  for _, run in runs.iterrows():
    last = last_row(run["workdir"])
    assert run["final_test_accuracy"] == pytest.approx(100 * last["test_accuracy"], abs=1e-3)
    assert run["final_val_accuracy"] == pytest.approx(100 * last["val_accuracy"], abs=1e-3)
    config = json.load(open(os.path.join(run["workdir"], "config.json")))
    assert run["seed"] == config["seed"] and run["method"] == config["amplification"]["method"]
  by_method = runs.groupby("method")
  assert by_method[["measure", "case", "threshold", "ratio", "reselect_every"]].count().loc[
    "none"
  ].tolist() == [0, 0, 0, 0, 0]
  assert by_method[["measure", "threshold", "ratio"]].count().loc["random"].tolist() == [0, 0, 2]
  assert by_method[["measure", "threshold", "ratio"]].count().loc["all"].tolist() == [0, 0, 0]
  smart = runs[runs["method"] == "intelligent"]
  assert sorted(smart["threshold"]) == [0.5, 0.5, 1.0, 1.0] and smart["ratio"].isna().all()


def test_directionality_and_matched_overlap_from_the_run_files(reported):
  root, _ = reported
  runs = analysis.load_runs(root)
  none = runs[runs["method"] == "none"]["workdir"]
  layers = [
    entry["layer"] for entry in json.load(open(os.path.join(none.iloc[0], "run.json")))["layers"]
  ]
  table = statistics.directionality_table(
    [analysis.read_frame(w, "directionality.jsonl") for w in none], "G_prime"
  )
  assert list(table.index) == layers and list(table.columns) == [1, 2, 3]
  want = defaultdict(list)
  for workdir in none:
    for line in open(os.path.join(workdir, "directionality.jsonl")):
      row = json.loads(line)
      want[row["layer"], row["epoch"]].append(row["G_prime"])
  for (layer, epoch), values in want.items():
    assert len(values) == 2 and table.loc[layer, epoch] == pytest.approx(np.mean(values))
  assert ((table.to_numpy() >= 0) & (table.to_numpy() <= 1)).all()
  for workdir in runs[runs["method"] == "matched_random"]["workdir"]:
    counts = analysis.selected_counts(analysis.read_frame(workdir, "layer_stats.jsonl"))
    assert counts["epoch"].tolist() == [2]
    assert (counts["selected"] == counts["by_measure"]).all()  # matched in number
    assert (counts["overlap"] <= counts["selected"]).all()


def finals_by_hand(root):
  """{(method, threshold): {seed: (test %, val %)}} read straight from the run files."""
  out = defaultdict(dict)
  for workdir in run_folder.find_runs(root):
    config = json.load(open(os.path.join(workdir, "config.json")))
    amp, last = config["amplification"], last_row(workdir)
    threshold = amp["threshold"] if amp["method"] in ("intelligent", "matched_random") else None
    out[amp["method"], threshold][config["seed"]] = (
      100 * last["test_accuracy"],
      100 * last["val_accuracy"],
    )
  return out


def test_summary_and_comparison_by_hand(reported):
  root, out = reported
  finals = finals_by_hand(root)
  summary = pd.read_csv(os.path.join(out, "summary.csv"))
  assert list(summary.columns) == list(ga_runs.SUMMARY_COLUMNS) and len(summary) == 6
  for _, row in summary.iterrows():
    threshold = None if pd.isna(row["threshold"]) else row["threshold"]
    tests = [t for t, _ in finals[row["method"], threshold].values()]
    assert row["n"] == 2
    assert row["test_mean"] == pytest.approx(np.mean(tests), abs=1e-3)
    assert row["test_std"] == pytest.approx(np.std(tests, ddof=1), abs=1e-3)

  comparison = pd.read_csv(os.path.join(out, "comparison.csv"))
  assert list(comparison.columns) == list(ga_runs.COMPARISON_COLUMNS)
  assert comparison["method"].tolist() == ["none", "all", "random", "intelligent", "matched_random"]
  rows = comparison.set_index("method")
  val = {t: np.mean([v for _, v in finals["intelligent", t].values()]) for t in (0.5, 1.0)}
  want = 0.5 if val[0.5] >= val[1.0] else 1.0  # ties to the smaller threshold
  assert rows.loc["intelligent", "chosen_threshold"] == want
  assert rows.loc["intelligent", "chosen_by"] == "validation"
  assert rows.loc["matched_random", "chosen_threshold"] == want
  none = finals["none", None]
  for method, threshold in (("intelligent", want), ("all", None), ("random", None)):
    diffs = [finals[method, threshold][s][0] - none[s][0] for s in (0, 1)]
    assert rows.loc[method, "diff_mean"] == pytest.approx(np.mean(diffs), abs=1e-3)
  best = max(t for th in (0.5, 1.0) for t, _ in finals["intelligent", th].values())
  assert rows.loc["intelligent", "paper_best"] == pytest.approx(best, abs=1e-3)


def test_report_tolerates_killed_and_unfinished_runs(mock_sweep, tmp_path):
  root = copy_sweep(mock_sweep, tmp_path / "sweep")
  cut = os.path.join(root, "intelligent", "method=intelligent-threshold=1.0-seed=1")
  lines = open(os.path.join(cut, "metrics.jsonl")).read().splitlines()
  with open(os.path.join(cut, "metrics.jsonl"), "w") as f:
    f.write("\n".join(lines[:2]) + "\n" + lines[2][:25])  # killed while writing epoch 3
  fresh = os.path.join(root, "late", "starting")
  os.makedirs(fresh)
  open(os.path.join(fresh, "config.json"), "w").write('{"model": "resn')
  open(os.path.join(fresh, "metrics.jsonl"), "w").close()
  out = str(tmp_path / "out")
  assert report.main([root, "--out", out]) == 0
  runs = pd.read_csv(os.path.join(out, "runs.csv")).set_index("workdir")
  assert len(runs) == 13 and (~runs["finished"]).sum() == 2
  assert runs.loc[cut, "epochs"] == 2 and pd.isna(runs.loc[cut, "final_test_accuracy"])
  summary = pd.read_csv(os.path.join(out, "summary.csv"))
  assert summary.loc[summary["threshold"] == 1.0, "n"].tolist() == [1]
  text = open(os.path.join(out, "report.md")).read()
  assert (
    "\n13 runs, 11 finished. 2 unfinished runs (listed below and in `runs.csv`) are left out "
    "of every statistic.\n" in text
  )
  assert cut in text


def test_the_report_opens_with_the_runs_it_leaves_out():
  runs = analysis.load_runs(os.path.join(ROOT, "results", "quickstart-sweep"))  # 11 runs

  def opening(runs):
    tables = dict(
      runs=runs, comparison=analysis.compare(runs), epoch_times=analysis.epoch_times(runs)
    )
    return report.report_markdown("sweep", tables, []).splitlines()[2]

  assert opening(runs) == "11 runs, all finished."
  runs.loc[3, "finished"] = False
  assert opening(runs) == (
    "11 runs, 10 finished. 1 unfinished run (listed below and in `runs.csv`) is left out of "
    "every statistic."
  )
  runs.loc[[0, 5], "finished"] = False
  assert opening(runs) == (
    "11 runs, 8 finished. 3 unfinished runs (listed below and in `runs.csv`) are left out of "
    "every statistic."
  )
  assert opening(runs.iloc[[1]]) == "1 run, finished."


def test_report_command_line(tmp_path):
  result = subprocess.run(
    [sys.executable, "-m", "gradamp_jax.report", str(tmp_path), "--out", str(tmp_path / "out")],
    cwd=ROOT,
    capture_output=True,
    text=True,
  )
  assert result.returncode == 2
  assert "no run folder (one holding config.json and metrics.jsonl)" in result.stderr


def test_report_with_no_finished_run(tmp_path):
  run = tmp_path / "runs" / "a"
  run.mkdir(parents=True)
  (run / "config.json").write_text(
    json.dumps(
      dict(
        model="resnet8",
        dataset="cifar10",
        seed=0,
        phases=[[2, 0.1, 0, 1]],
        amplification=dict(method="none"),
      )
    )
  )
  (run / "metrics.jsonl").write_text(
    json.dumps(dict(epoch=1, test_accuracy=0.5, epoch_seconds=3.0)) + "\n"
  )
  out = tmp_path / "out"
  assert report.main([str(tmp_path / "runs"), "--out", str(out)]) == 0
  assert pd.read_csv(out / "comparison.csv").empty
  assert pd.read_csv(out / "runs.csv")["epochs"].tolist() == [1]
  assert (
    "\n1 run, 0 finished. 1 unfinished run (listed below and in `runs.csv`) is left out of "
    "every statistic.\n" in (out / "report.md").read_text()
  )
