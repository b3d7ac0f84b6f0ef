"""Config arguments, the sweep launcher and the analysis helpers."""

import json
import os
import sys

import numpy as np
import pandas as pd
import pytest

from gradamp_jax import analysis
from gradamp_jax.config_args import parse_arg
from configs import paper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "launch"))
import sweep  # noqa: E402


def test_parse_arg_types_and_errors():
  assert parse_arg("threshold=1.5,case=2,fast=false", threshold=1.0, case=1, fast=True,
                   name="x") == dict(threshold=1.5, case=2, fast=False, name="x")
  assert parse_arg(None, a=1) == {"a": 1}
  with pytest.raises(ValueError, match="unknown; allowed: a"):
    parse_arg("b=1", a=1)
  with pytest.raises(ValueError, match="case='two': expected int"):
    parse_arg("case=two", case=1)
  with pytest.raises(ValueError, match="expected key=value"):
    parse_arg("case", case=1)


def test_paper_config_strategy_and_sweep_size():
  assert paper.get_config("model=resnet101").phases[0] == (10, 0.1, 0, 1)
  assert paper.get_config("model=vgg19").phases[0] == (50, 0.1, 0, 1)
  with pytest.raises(ValueError, match="the paper's models are"):
    paper.get_config("model=resnet8")
  # params_1: 19 thresholds (0.7..2.5); params_2: 9 (1.0..3.0); × G/G′ × 2 cases, + none, random.
  assert len(paper.get_sweep("model=resnet18,seeds=1,controls=false")) == 19 * 4 + 2
  runs = paper.get_sweep("model=resnet50,seeds=2,controls=false")
  assert len(runs) == 2 * (9 * 4 + 2)
  assert sorted({r["threshold"] for r in runs if "threshold" in r}) == [
      1.0, 1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 2.75, 3.0]


def test_paper_sweep_has_the_controls_on_paired_seeds():
  runs = paper.get_sweep("model=resnet18,validation_fraction=0.1")
  methods = [r["method"] for r in runs]
  assert len(runs) == 3 * (3 + 2 * 4 * 19)  # default: 3 seeds, with the controls
  assert methods.count("all") == methods.count("none") == methods.count("random") == 3
  intelligent = {(r["measure"], r["case"], r["threshold"], r["seed"])
                 for r in runs if r["method"] == "intelligent"}
  matched = {(r["measure"], r["case"], r["threshold"], r["seed"])
             for r in runs if r["method"] == "matched_random"}
  assert intelligent == matched and len(intelligent) == 3 * 4 * 19
  for method in set(methods):  # every method on the same seeds
    assert {r["seed"] for r in runs if r["method"] == method} == {0, 1, 2}
  config = paper.get_config(",".join(f"{k}={v}" for k, v in runs[-1].items()))
  assert config.validation_fraction == 0.1 and config.amplification.method == "matched_random"
  assert paper.get_config("").validation_fraction == 0.0  # the paper's protocol by default


def test_sweep_expands_to_commands_that_parse(tmp_path, monkeypatch):
  monkeypatch.chdir(ROOT)
  sweep.main(["--config", "configs/paper.py", "--sweep", "model=vgg19,dataset=cifar100,seeds=1,controls=false",
              "--root", str(tmp_path), "--mode", "slurm"])
  recorded = json.load(open(tmp_path / "sweep.json"))["runs"]
  assert len(recorded) == 78
  commands = (tmp_path / "commands.txt").read_text().splitlines()
  assert len(commands) == 78 and "--config configs/paper.py:model=vgg19" in commands[0]
  assert "#SBATCH --array=1-78" in (tmp_path / "sweep.sbatch").read_text()
  # Every run's argument string builds a config.
  for run in recorded[:5]:
    arg = ",".join(f"{k}={v}" for k, v in run["args"].items())
    assert paper.get_config(arg).dataset == "cifar100"


def write_run(workdir, accuracies):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
    for epoch, acc in enumerate(accuracies, 1):
      f.write(json.dumps(dict(epoch=epoch, test_accuracy=acc, train_accuracy=acc,
                              epoch_seconds=30.0)) + "\n")


def test_load_sweep_and_summarize(tmp_path):
  runs = []
  finals = {("none", 0): 0.90, ("none", 1): 0.92, ("intelligent", 0): 0.93,
            ("intelligent", 1): 0.96}
  for (method, seed), final in finals.items():
    args = dict(method=method, measure="G", case=1, threshold=1.0, seed=seed)
    workdir = str(tmp_path / f"{method}-{seed}")
    write_run(workdir, [0.5, final + 0.01, final])  # best is the middle epoch
    runs.append(dict(name=f"{method}-{seed}", args=args, workdir=workdir))
  runs.append(dict(name="pending", args=dict(method="none", measure="G", case=1,
                                            threshold=1.0, seed=2),
                   workdir=str(tmp_path / "pending")))
  (tmp_path / "sweep.json").write_text(json.dumps(dict(runs=runs)))
  frame = analysis.load_sweep(str(tmp_path))
  assert len(frame) == 5 and np.isnan(frame.loc[4, "final_accuracy"])
  np.testing.assert_allclose(frame.loc[0, ["final_accuracy", "best_accuracy", "minutes"]],
                             [90.0, 91.0, 1.5])
  table = analysis.summarize(frame, ["method"]).set_index("method")
  np.testing.assert_allclose(table.loc["none", ["mean", "std", "best"]],
                             [91.0, np.std([90, 92], ddof=1), 92.0])
  np.testing.assert_allclose(table.loc["intelligent", ["mean", "std", "best"]],
                             [94.5, np.std([93, 96], ddof=1), 96.0])
  assert table.loc["none", "runs"] == 2


def test_plots_and_selection_table(tmp_path):
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  frame = pd.DataFrame([
      dict(method="none", measure="G", case=1, threshold=1.0, final_accuracy=a)
      for a in (90.0, 92.0)] + [
      dict(method="intelligent", measure=m, case=c, threshold=t, final_accuracy=90 + t)
      for m in ("G", "G_prime") for c in (1, 2) for t in (1.0, 1.5)])
  ax = analysis.plot_threshold_curves(frame)
  labels = [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels == ["no amplification (91.00)", "G case 1", "G case 2", "G′ case 1",
                    "G′ case 2"]
  plt.close("all")
  stats = pd.DataFrame([dict(layer=l, epoch=e, selected=s) for l, e, s in
                        [("conv", 51, True), ("bn", 51, False), ("conv", 101, False),
                         ("bn", 101, True)]])
  table = analysis.selection_table(stats)
  assert table.loc["conv"].tolist() == [1, 0] and table.loc["bn"].tolist() == [0, 1]


def test_notebook_runs_on_a_sweep(tmp_path, monkeypatch):
  import matplotlib
  matplotlib.use("Agg")
  runs = []
  for method, threshold, final in (("none", 1.0, 0.9), ("intelligent", 1.0, 0.92),
                                   ("intelligent", 1.5, 0.95)):
    workdir = str(tmp_path / f"{method}-{threshold}")
    write_run(workdir, [0.5, final])
    (tmp_path / f"{method}-{threshold}" / "config.json").write_text("{}")
    with open(os.path.join(workdir, "layer_stats.jsonl"), "w") as f:
      for layer, selected in (("conv", True), ("bn", False)):
        f.write(json.dumps(dict(epoch=2, layer=layer, selected=selected)) + "\n")
    runs.append(dict(name=f"{method}-{threshold}", workdir=workdir,
                     args=dict(method=method, measure="G", case=1, threshold=threshold,
                               seed=0)))
  (tmp_path / "sweep.json").write_text(json.dumps(dict(runs=runs)))
  notebook = json.load(open(os.path.join(ROOT, "notebooks", "analysis.ipynb")))
  namespace = {}
  monkeypatch.setattr("matplotlib.pyplot.show", lambda: None)
  for cell in notebook["cells"]:
    if cell["cell_type"] == "code":
      source = "".join(cell["source"]).replace('"runs/r18-c10"', repr(str(tmp_path)))
      exec(compile(source, "analysis.ipynb", "exec"), namespace)
  assert namespace["best"]["name"] == "intelligent-1.5"
  assert list(namespace["curves"]) == ["intelligent-1.5", "none-1.0"]
