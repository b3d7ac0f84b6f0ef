"""Config arguments and the sweep launcher."""

import json
import os
import re
import shlex
import sys
import types

import pytest

from configs import paper
from gradamp_jax.training.config_args import parse_arg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from gradamp_jax.sweeps import cluster, local  # noqa: E402
from gradamp_jax.sweeps import launcher as sweep  # noqa: E402


def test_parse_arg_types_and_errors():
  assert parse_arg(
    "threshold=1.5,case=2,fast=false", threshold=1.0, case=1, fast=True, name="x"
  ) == dict(threshold=1.5, case=2, fast=False, name="x")
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
    1.0,
    1.25,
    1.5,
    1.75,
    2.0,
    2.25,
    2.5,
    2.75,
    3.0,
  ]


def test_paper_sweep_has_the_controls_on_paired_seeds():
  runs = paper.get_sweep("model=resnet18,validation_fraction=0.1")
  methods = [r["method"] for r in runs]
  assert len(runs) == 3 * (3 + 2 * 4 * 19)  # default: 3 seeds, with the controls
  assert methods.count("all") == methods.count("none") == methods.count("random") == 3
  intelligent = {
    (r["measure"], r["case"], r["threshold"], r["seed"])
    for r in runs
    if r["method"] == "intelligent"
  }
  matched = {
    (r["measure"], r["case"], r["threshold"], r["seed"])
    for r in runs
    if r["method"] == "matched_random"
  }
  assert intelligent == matched and len(intelligent) == 3 * 4 * 19
  for method in set(methods):  # every method on the same seeds
    assert {r["seed"] for r in runs if r["method"] == method} == {0, 1, 2}
  config = paper.get_config(",".join(f"{k}={v}" for k, v in runs[-1].items()))
  assert config.validation_fraction == 0.1 and config.amplification.method == "matched_random"
  assert paper.get_config("").validation_fraction == 0.0  # the paper's protocol by default


def test_sweep_expands_to_commands_that_parse(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(ROOT)
  sweep.main(
    [
      "--config",
      "configs/paper.py",
      "--sweep",
      "model=vgg19,dataset=cifar100,seeds=1,controls=false",
      "--root",
      str(tmp_path),
      "--mode",
      "print",
    ]
  )
  recorded = json.load(open(tmp_path / "sweep.json"))["runs"]
  assert len(recorded) == 78
  commands = capsys.readouterr().out.splitlines()
  assert len(commands) == 78 and "--config configs/paper.py:model=vgg19" in commands[0]
  # Every run's argument string builds a config.
  for run in recorded[:5]:
    arg = ",".join(f"{k}={v}" for k, v in run["args"].items())
    assert paper.get_config(arg).dataset == "cifar100"


RECORD = """import json, os, sys, time
start = time.time(); time.sleep(1.0)
json.dump(dict(gpu=os.environ.get("CUDA_VISIBLE_DEVICES"),
               fraction=os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"],
               start=start, end=time.time()), open(sys.argv[1], "w"))
"""


def test_run_concurrently_gives_each_run_a_gpu_slot_and_reports_failures(tmp_path):
  commands = [
    (f"run{i}", [sys.executable, "-c", RECORD, str(tmp_path / f"run{i}.json")]) for i in range(5)
  ]
  commands.insert(2, ("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"]))
  failed = local.run_concurrently(commands, 2, ["3", "5"], str(tmp_path / "logs"))
  assert failed == ["bad"]
  assert "boom" in (tmp_path / "logs" / "bad.log").read_text()
  records = [json.load(open(tmp_path / f"run{i}.json")) for i in range(5)]
  assert {r["gpu"] for r in records} == {"3", "5"}
  assert {r["fraction"] for r in records} == {"0.450"}
  # At most 2 per GPU at any time, so at most 4 at once; the first four start together.
  for r in records:
    alive = [o for o in records if o["start"] <= r["start"] < o["end"]]
    assert len(alive) <= 4
    assert sum(o["gpu"] == r["gpu"] for o in alive) <= 2
  assert max(len([o for o in records if o["start"] <= r["start"] < o["end"]]) for r in records) >= 2


def test_run_all_runs_every_command_and_exits_naming_the_failed(tmp_path, capsys):
  ok = [sys.executable, "-c", f"open({str(tmp_path / 'ran')!r}, 'a').write('x')"]
  bad = [sys.executable, "-c", "import sys; sys.exit(3)"]
  commands = [("first", ok), ("bad", bad), ("last", ok)]
  with pytest.raises(SystemExit) as raised:
    local.run_all(commands, "cohort", None, str(tmp_path / "logs"), ["a, b", "c", "d"])
  assert (tmp_path / "ran").read_text() == "xx"  # the one after the failure ran too
  assert "[2/3] bad: c" in capsys.readouterr().out
  assert str(raised.value) == "1 cohort(s) failed: bad; run the same command again to resume"
  with pytest.raises(SystemExit) as raised:  # at once: the message says where the logs are
    local.run_all(commands, "run", 2, str(tmp_path / "logs"))
  assert str(raised.value).startswith(f"1 run(s) failed: bad (logs in {tmp_path / 'logs'});")
  assert (tmp_path / "ran").read_text() == "xxxx"
  local.run_all(commands[:1], "run", None, str(tmp_path / "logs"))  # none failed: returns


def test_visible_gpus_follow_cuda_visible_devices(monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
  assert local.visible_gpus() == ["0", "2"]
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
  assert local.visible_gpus() == []


@pytest.mark.parametrize(
  "extra", [["--mode", "slurm"], ["--mode", "print"], ["--mode", "local", "--tree", "0"]]
)
def test_runs_per_device_needs_local_mode(tmp_path, extra):
  with pytest.raises(SystemExit) as exit_info:
    sweep.main(
      [
        "--config",
        "configs/quickstart.py",
        "--root",
        str(tmp_path),
        "--runs_per_device",
        "2",
        *extra,
      ]
    )
  assert exit_info.value.code == 2


def test_cohort_groups_runs_that_differ_only_in_seed_and_rule_numbers(
  tmp_path, monkeypatch, capsys
):
  monkeypatch.chdir(ROOT)
  argv = ["--config", "configs/replication.py", "--sweep", "grid=actions,first_seed=3"]
  argv += ["--root", str(tmp_path), "--cohort", "4"]
  sweep.main([*argv, "--mode", "print"])
  commands = capsys.readouterr().out.splitlines()
  runs = json.load(open(tmp_path / "sweep.json"))["runs"]
  assert len(runs) == 30
  # 3 seeds of: none; amplify G′ c1 at 2 thresholds; its matched random; scale_by_zscore G′
  # at 2 alphas; freeze c3 at 2 thresholds; random freeze; scale_by_zscore GSNR: groups of
  # 3, 6, 3, 6, 6, 3, 3 runs, cut at 4.
  assert len(commands) == 1 + 2 + 1 + 2 + 2 + 1 + 1
  assert [shlex.split(c)[-2:] for c in commands] == [["--cohort_index", str(i)] for i in range(10)]
  calls = []
  monkeypatch.setattr(local.subprocess, "call", lambda command: calls.append(command) or 0)
  names = sweep.main([*argv, "--mode", "local", "--config.image_folder=/data"])
  assert [c[c.index("--cohort_index") + 1] for c in calls] == [str(i) for i in range(10)]
  assert all(c[-1] == "--config.image_folder=/data" for c in calls)
  assert json.load(open(tmp_path / "sweep.json"))["cohorts"] == names
  assert sorted(n for cohort in names for n in cohort) == sorted(r["name"] for r in runs)
  for cohort in names:
    shared = {re.sub(r"(seed|threshold|alpha)=[^-]+-?", "", n) for n in cohort}
    assert len(shared) == 1 and len(cohort) <= 4, cohort
  # Branched: one job per cohort of trees whose trunks share a program (the 3 seeds' trunks
  # of the none tree, and of the scale_by_zscore tree).
  submitted = []

  def submit(commands, folder, **options):
    submitted.append(commands)
    return [types.SimpleNamespace(job_id=str(100 + i)) for i in range(len(commands))]

  monkeypatch.setattr(cluster, "submit", submit)
  sweep.main([*argv, "--mode", "slurm", "--branch"])
  (commands,) = submitted
  jobs = [shlex.split(c) for c in commands]
  assert [c[c.index("--tree") + 1] for c in jobs] == ["0,2,4", "1,3,5"]
  assert all(c[c.index("--cohort") + 1] == "4" and "--branch" in c for c in jobs)
  record = json.load(open(tmp_path / "sweep.json"))
  assert record["tree_jobs"] == ["100", "101"] and record["job_trees"] == [[0, 2, 4], [1, 3, 5]]


QUICKSTART = ["--config", "configs/quickstart.py", "--sweep", "seeds=2"]


def test_only_keeps_the_runs_whose_fields_take_the_values_and_list_prints_them(
  tmp_path, monkeypatch, capsys
):
  from configs import quickstart

  monkeypatch.chdir(ROOT)
  root = tmp_path / "root"
  only = ["--only", "threshold=1", "--only", "case=2,1", "--only", "method=matched_random"]
  runs = sweep.main([*QUICKSTART, "--root", str(root), *only, "--list", "--mode", "local"])
  expected = [
    r
    for r in quickstart.get_sweep("seeds=2")
    if r["method"] == "matched_random" and r.get("threshold") == 1.0 and r.get("case") in (1, 2)
  ]
  assert len(expected) == 8 and [r["args"] for r in runs] == expected
  lines = capsys.readouterr().out.splitlines()
  assert len(lines) == 8
  for line, args in zip(lines, expected):
    workdir, fields = line.split("  ")
    assert workdir == str(root / "-".join(f"{k}={v}" for k, v in args.items()))
    assert fields.split() == [f"{k}={v}" for k, v in args.items()]
  assert not root.exists()  # nothing run, nothing recorded


def test_only_runs_the_part_in_print_and_local_mode(tmp_path, monkeypatch, capsys):
  monkeypatch.chdir(ROOT)
  argv = [*QUICKSTART, "--root", str(tmp_path), "--only", "method=none,all", "--only", "seed=1"]
  sweep.main([*argv, "--mode", "print"])
  commands = capsys.readouterr().out.splitlines()
  assert [c.split("--workdir ")[1] for c in commands] == [
    str(tmp_path / "validation_fraction=0.1-method=none-seed=1"),
    str(tmp_path / "validation_fraction=0.1-method=all-seed=1"),
  ]
  record = json.load(open(tmp_path / "sweep.json"))
  assert len(record["runs"]) == 2 and record["only"] == ["method=none,all", "seed=1"]
  calls = []
  monkeypatch.setattr(local.subprocess, "call", lambda command: calls.append(command) or 0)
  sweep.main([*argv, "--mode", "local"])
  assert [shlex.join(c) for c in calls] == commands


def test_only_selects_before_cohorts_and_trees_in_every_mode(tmp_path, monkeypatch, capsys):
  from gradamp_jax.sweeps import cohorts

  monkeypatch.chdir(ROOT)
  argv = ["--config", "configs/replication.py", "--sweep", "grid=actions,first_seed=3"]
  argv += ["--root", str(tmp_path), "--cohort", "4", "--only", "seed=4"]
  sweep.main([*argv, "--mode", "print"])
  commands = [shlex.split(c) for c in capsys.readouterr().out.splitlines()]
  # seed 4's 10 runs: groups of 1, 2, 1, 2, 2, 1, 1 runs
  assert len(commands) == 7 and all(c[c.index("--only") + 1] == "seed=4" for c in commands)
  trained = []
  monkeypatch.setattr(cohorts, "train_one", lambda c, workdirs, until: trained.append(workdirs))
  for command in commands:  # each cohort's process trains the cohort of the runs kept
    sweep.main(command[3:])
  selected = [r["workdir"] for r in json.load(open(tmp_path / "sweep.json"))["runs"]]
  assert len(selected) == 10 and all(w.endswith("-seed=4") for w in selected)
  assert sorted(w for cohort in trained for w in cohort) == sorted(selected)
  submitted = []

  def submit(commands, folder, **options):
    submitted.append(commands)
    return [types.SimpleNamespace(job_id=str(100 + i)) for i in range(len(commands))]

  monkeypatch.setattr(cluster, "submit", submit)
  for mode in (["--cohort", "2"], ["--branch"], []):
    sweep.main([*argv[:-4], "--only", "seed=4", "--mode", "slurm", *mode])
    jobs = [shlex.split(c) for c in submitted.pop()]
    for job in jobs:  # a run's own command, or the launcher's with the selection
      flag = "--workdir" if "--workdir" in job else "--only"
      assert re.fullmatch(r"(.*-)?seed=4", job[job.index(flag) + 1]), job
    assert len(json.load(open(tmp_path / "sweep.json"))["runs"]) == 10
  assert len(jobs) == 10  # one job per run kept


@pytest.mark.parametrize(
  "only, message",
  [
    (
      ["sed=0"],
      "--only sed=0: the sweep's runs have no field sed; their fields: validation_fraction, "
      "method, seed, measure, case, threshold",
    ),
    (
      ["seed=0,2,3"],
      "--only seed=0,2,3: no run of the sweep has seed=2 or seed=3; seed is one of 0, 1",
    ),
    (
      ["method=none", "threshold=1"],
      "--only threshold=1: keeps none of the runs --only method=none keeps; none of them has a "
      "threshold",
    ),
    (
      ["case=1", "measure=G", "method=all"],
      "--only method=all: keeps none of the runs --only case=1 --only measure=G keeps; among "
      "them method is one of intelligent, matched_random",
    ),
  ],
)
def test_only_refuses_a_field_or_value_the_sweep_lacks_and_an_empty_selection(
  tmp_path, monkeypatch, only, message
):
  monkeypatch.chdir(ROOT)
  with pytest.raises(SystemExit) as raised:
    sweep.main([*QUICKSTART, "--root", str(tmp_path), *[a for o in only for a in ("--only", o)]])
  assert str(raised.value) == message
  assert not (tmp_path / "sweep.json").exists()


@pytest.mark.parametrize("text", ["seed", "seed=", "=0", "seed=0,"])
def test_only_needs_field_equals_values(tmp_path, capsys, text):
  with pytest.raises(SystemExit) as raised:
    sweep.main([*QUICKSTART, "--root", str(tmp_path), "--only", text])
  assert raised.value.code == 2
  assert f"argument --only: {text!r}: expected FIELD=V1,V2" in capsys.readouterr().err
