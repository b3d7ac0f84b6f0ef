"""SLURM through submitit, run with submitit's local executor: a preempted job is requeued
and resumes."""

import json
import os
import shlex
import sys

import pytest

from configs import paper
from gradamp_jax import jsonl
from gradamp_jax.sweeps import cluster

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from gradamp_jax.sweeps import launcher as sweep  # noqa: E402


@pytest.mark.slow
def test_preempted_job_is_requeued_and_resumes(tmp_path, monkeypatch):
  workdir = tmp_path / "run"
  # The cluster's preemption signal (SIGTERM) reaches the training process once, in epoch 2.
  monkeypatch.setenv("FAULT_ONCE", str(tmp_path / "preempted-once"))
  command = f"{sys.executable} {ROOT}/tests/fault_run.py {workdir} TERM@2.3"
  jobs = cluster.submit(
    [command], str(tmp_path / "slurm" / "%j"), cluster="local", time_min=60, gpus=0
  )
  assert len(jobs) == 1
  jobs[0].result()  # raises if the job failed
  log = jobs[0].stderr() + jobs[0].stdout()
  assert "received SIGTERM" in log and "requeueing" in log
  assert "Resumed from the checkpoint at update 10" in log  # 6 steps per epoch
  assert [r["epoch"] for r in jsonl.read_jsonl(workdir / "metrics.jsonl")] == [1, 2, 3]


def test_sweep_submits_one_job_per_run(tmp_path, monkeypatch):
  submitted = []
  monkeypatch.setattr(
    cluster,
    "submit",
    lambda commands, folder, **kw: (
      submitted.append((commands, folder, kw))
      or [type("Job", (), {"job_id": str(i)})() for i in range(len(commands))]
    ),
  )
  monkeypatch.chdir(ROOT)
  sweep.main(
    [
      "--config",
      "configs/paper.py",
      "--sweep",
      "model=resnet50,seeds=2",
      "--root",
      str(tmp_path),
      "--mode",
      "slurm",
      "--partition",
      "gpu",
      "--time_min",
      "600",
      "--gpus",
      "2",
    ]
  )
  ((commands, folder, options),) = submitted
  assert len(commands) == len(paper.get_sweep("model=resnet50,seeds=2"))  # one job per run
  assert folder == str(tmp_path / "slurm" / "%j")
  assert options["partition"] == "gpu" and options["time_min"] == 600 and options["gpus"] == 2
  assert all("-m gradamp_jax.main" in c for c in commands)


def test_branched_sweep_submits_one_job_per_tree_with_the_overrides(tmp_path, monkeypatch):
  submitted = []
  monkeypatch.setattr(
    cluster,
    "submit",
    lambda commands, folder, **kw: (
      submitted.append(commands)
      or [type("Job", (), {"job_id": str(i)})() for i in range(len(commands))]
    ),
  )
  monkeypatch.chdir(ROOT)
  sweep.main(
    [
      "--config",
      "configs/quickstart.py",
      "--sweep",
      "seeds=2",
      "--root",
      str(tmp_path),
      "--mode",
      "slurm",
      "--branch",
      "--config.batch_size=64",
    ]
  )
  (commands,) = submitted
  assert len(commands) == 2  # one tree per seed: the runs of a seed differ only in their rule
  for k, command in enumerate(commands):
    args = shlex.split(command)
    assert args[args.index("--mode") + 1] == "local" and "--branch" in args
    assert args[args.index("--tree") + 1] == str(k) and "--config.batch_size=64" in args
  with open(tmp_path / "sweep.json") as f:  # every run, with its own command and override
    runs = json.load(f)["runs"]
  assert len(runs) == 2 * 11 and all("--config.batch_size=64" in r["command"] for r in runs)
