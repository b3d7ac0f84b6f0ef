"""Runs that are killed, preempted or find damaged checkpoints end as if nothing happened.

Each run is the real command line in a subprocess (``tests/fault_run.py``: mock CIFAR, 6 steps
per epoch, 3 epochs: epoch 1 plain, 2 analysed, 3 amplified). A chain of runs on one workdir,
each stopped at another point, must end bitwise identical to one uninterrupted run.
"""

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from typing import NamedTuple

import numpy as np
import orbax.checkpoint as ocp
import pytest
from conftest import uninterrupted_run

from benchmarks import gpu_checks
from gradamp_jax import jsonl, run_folder
from gradamp_jax.training import checkpointing, preemption
from gradamp_jax.training.workdir_lock import WorkdirBusyError, WorkdirLock

pytestmark = pytest.mark.slow  # real processes, killed and signalled
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 6  # per epoch: 48 mock examples, batch 8
KILLED = -9


def run(workdir, fault=None, *overrides):
  command = [sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), str(workdir)]
  command += ([fault] if fault else []) + list(overrides)
  result = subprocess.run(
    command,
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
  )
  return result


def outputs(workdir):
  """Metrics and layer statistics without timings, and the final state's leaves."""
  with ocp.CheckpointManager(os.path.join(workdir, "checkpoints")) as manager:
    assert manager.latest_step() == 3 * STEPS
  return gpu_checks.read_run(workdir, files=("metrics.jsonl", "layer_stats.jsonl"))


def assert_same(workdir, reference):
  """Bitwise the same: the GPU suite's resume check (benchmarks/gpu_checks.py)."""
  problems, _ = gpu_checks.compare(outputs(workdir), reference, gpu_checks.BITWISE)
  assert not problems, problems


@pytest.fixture(scope="module")
def reference():
  """The uninterrupted run (seed 0, trained once per session: conftest.uninterrupted_run)."""
  return outputs(uninterrupted_run())


def test_compilation_cache_serves_a_second_seed(tmp_path, monkeypatch):
  """With $JAX_COMPILATION_CACHE_DIR (README), a run that differs only in seed compiles
  nothing new: every program it needs is already in the persistent cache (a cache of the
  test's own, so that nothing else adds to it meanwhile)."""
  cache = tmp_path / "cache"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", str(cache))
  assert run(tmp_path / "seed0").returncode == 0
  before = sorted(os.listdir(cache))
  result = run(tmp_path / "seed1", None, "--config.seed=1")
  assert result.returncode == 0, result.stderr
  assert before and sorted(os.listdir(cache)) == before


# Kill points of the chain, each run resuming where the previous one was killed.
KILL_POINTS = [
  "KILL@1.3",  # first epoch, before any checkpoint
  "KILL@2.2",  # during the analysis epoch
  "KILL@save=12",  # while the checkpoint after the analysis epoch is being written
  "KILL@3.0",  # after the analysis epoch, before the first amplified step
  "KILL@3.4",  # during the amplified epoch, after the selection
]


def test_kill_9_at_each_point_then_resume_is_bitwise_identical(tmp_path, reference):
  workdir = tmp_path / "run"
  for fault in KILL_POINTS:
    result = run(workdir, fault)
    assert result.returncode == KILLED, (fault, result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    for name in ("metrics.jsonl", "layer_stats.jsonl"):  # every line still parses
      if os.path.exists(workdir / name):
        jsonl.read_jsonl(workdir / name)
  result = run(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert_same(workdir, reference)
  # Damage the final checkpoint: the run names it, falls back to the one before and redoes
  # the last epoch, ending the same.
  array = max(
    glob.glob(
      str(workdir / "checkpoints" / str(3 * STEPS) / "default" / "ocdbt.process_0" / "d" / "*")
    ),
    key=os.path.getsize,
  )
  os.truncate(array, os.path.getsize(array) // 2)
  result = run(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"warning: checkpoint {3 * STEPS} cannot be restored" in result.stderr
  assert f"Resumed from the checkpoint at update {2 * STEPS}" in result.stdout
  assert os.listdir(workdir / run_folder.BAD_CHECKPOINTS)[0].startswith(f"{3 * STEPS}-")
  assert_same(workdir, reference)


# Signals of the chain: each stops the run after the call (2 steps) it arrived before.
SIGNAL_POINTS = [("TERM@1.2", 4), ("INT@2.2", STEPS + 4), ("USR1@3.1", 2 * STEPS + 2)]


def test_preemption_signals_checkpoint_mid_epoch_and_resume_bitwise(tmp_path, reference):
  workdir = tmp_path / "run"
  for fault, step in SIGNAL_POINTS:
    result = run(workdir, fault)
    assert result.returncode == preemption.EXIT_PREEMPTED, (fault, result.stderr[-2000:])
    assert f"received SIG{fault.split('@')[0]}" in result.stderr
    assert (
      f"saving a checkpoint at update {step}" in result.stderr
      or f"checkpoint at update {step} in" in result.stderr
    ), result.stderr[-2000:]
    assert str(step) in os.listdir(workdir / "checkpoints")
    assert json.load(open(workdir / "partial_epoch.json"))["step"] == step
  result = run(workdir)
  assert result.returncode == 0, result.stderr[-3000:]
  assert f"Resumed from the checkpoint at update {SIGNAL_POINTS[-1][1]}" in result.stdout
  assert_same(workdir, reference)


# ----------------------------------------------------------------------------- cohorts

# Two members: the reference run's threshold (0.5) and 0.3 (members of other seeds, and
# members against their runs alone: tests/test_cohort.py).
COHORT = ["--cohort=amplification.threshold=0.5,0.3"]
MEMBERS = ["amplification.threshold=0.5", "amplification.threshold=0.3"]


@pytest.fixture(scope="module")
def cohort_reference(tmp_path_factory, reference):
  """The uninterrupted cohort (after the run alone: its compilations are in the cache)."""
  del reference
  root = tmp_path_factory.mktemp("uninterrupted_cohort")
  result = run(root, None, *COHORT)
  assert result.returncode == 0, result.stderr[-3000:]
  return {member: outputs(root / member) for member in MEMBERS}


def test_a_killed_and_signalled_cohort_with_a_damaged_member_resumes_bitwise(
  tmp_path, cohort_reference
):
  """kill -9 in epoch 2, SIGTERM in epoch 3 (every member checkpoints at update 14), then
  one member's newest checkpoint truncated: every member resumes at update 12, the newest
  all of them hold, and ends bitwise identical to its member of the uninterrupted cohort,
  each selecting by its own threshold."""
  for fault in ("KILL@2.2", "TERM@3.1"):
    result = run(tmp_path, fault, *COHORT)
    expected = KILLED if fault.startswith("KILL") else preemption.EXIT_PREEMPTED
    assert result.returncode == expected, (fault, result.stderr[-2000:])
  for member in MEMBERS:
    assert sorted(os.listdir(tmp_path / member / "checkpoints"), key=int) == ["12", "14"]
  damaged = tmp_path / MEMBERS[1] / "checkpoints" / "14" / "default" / "ocdbt.process_0"
  array = max(glob.glob(str(damaged / "d" / "*")), key=os.path.getsize)
  os.truncate(array, os.path.getsize(array) // 2)
  result = run(tmp_path, None, *COHORT)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "warning: checkpoint 14 cannot be restored" in result.stderr
  assert "Resumed every member from its checkpoint at update 12" in result.stdout
  assert all(f"[{member}] epoch 3/3  lr" in result.stdout for member in MEMBERS)
  counts = []
  for member in MEMBERS:
    assert_same(tmp_path / member, cohort_reference[member])
    stats = cohort_reference[member][0]["layer_stats.jsonl"]
    threshold = float(member.rpartition("=")[2])
    assert [r["selected"] for r in stats] == [abs(r["normalized"]) > threshold for r in stats]
    counts.append(sum(r["selected"] for r in stats))
  assert counts[1] > counts[0]  # the lower threshold takes more


# ----------------------------------------------------------------------------- checkpoints


def _manager_with_two(tmp_path, n=1000):
  directory = tmp_path / "checkpoints"
  manager = ocp.CheckpointManager(str(directory), options=ocp.CheckpointManagerOptions(create=True))
  for step in (6, 12):
    manager.save(step, args=ocp.args.StandardSave(_state(step, n)))
  manager.wait_until_finished()
  return manager, directory


class State(NamedTuple):  # shaped like steps.TrainState: a NamedTuple with a step
  step: np.ndarray
  w: np.ndarray


def _state(step, n=1000):
  return State(np.array(step, np.int32), np.arange(n, dtype=np.float32) * step)


def _truncate(directory):
  array = max(
    glob.glob(str(directory / "12" / "default" / "ocdbt.process_0" / "d" / "*")),
    key=os.path.getsize,
  )
  os.truncate(array, os.path.getsize(array) // 2)


def _remove_metadata(directory):
  os.remove(directory / "12" / "default" / "_METADATA")


def _other_model(directory):
  shutil.rmtree(directory / "12")
  other = directory.parent / "other"
  with ocp.CheckpointManager(str(other)) as manager:
    manager.save(12, args=ocp.args.StandardSave(_state(12, n=77)))
  shutil.copytree(other / "12", directory / "12")


class OtherLayout(NamedTuple):  # the state with one field more
  step: np.ndarray
  w: np.ndarray
  scale: np.ndarray


def _other_layout(directory):
  shutil.rmtree(directory / "12")
  other = directory.parent / "other"
  state = OtherLayout(*_state(12), np.ones(3, np.float32))
  with ocp.CheckpointManager(str(other)) as manager:
    manager.save(12, args=ocp.args.StandardSave(state))
  shutil.copytree(other / "12", directory / "12")


@pytest.mark.parametrize(
  "damage, reason",
  [
    (_truncate, 'Error reading "w/0"'),
    (_remove_metadata, "pytree structure"),
    (_other_model, ".w is float32[77], this run's is float32[1000]"),
    (_other_layout, "tree structures do not match: scale"),
  ],
)
def test_damaged_newest_checkpoint_is_named_and_the_older_one_restores(
  tmp_path, capsys, damage, reason
):
  manager, directory = _manager_with_two(tmp_path)
  damage(directory)
  manager.reload()
  step, state = checkpointing.restore_newest(
    manager, _state(0), str(tmp_path), step_of=lambda s: int(s.step)
  )
  assert step == 6
  np.testing.assert_array_equal(state.w, _state(6).w)
  message = capsys.readouterr().err
  assert "warning: checkpoint 12 cannot be restored" in message and reason in message
  assert os.listdir(directory) == ["6"]  # the bad one was moved out of the way
  assert os.listdir(tmp_path / run_folder.BAD_CHECKPOINTS)[0].startswith("12-")


def test_no_restorable_checkpoint_over_results_is_refused(tmp_path):
  manager, directory = _manager_with_two(tmp_path)
  for step in ("6", "12"):
    os.remove(directory / step / "default" / "_METADATA")
  manager.reload()
  with pytest.raises(
    checkpointing.NoRestorableCheckpointError,
    match=r"no checkpoint restores \(tried 12 .*6 .*refusing to start over",
  ):
    checkpointing.restore_newest(manager, _state(0), str(tmp_path), step_of=lambda s: int(s.step))
  # Results without any checkpoint are refused too; one epoch's row is not worth keeping.
  shutil.rmtree(tmp_path / run_folder.BAD_CHECKPOINTS)
  jsonl.JsonlWriter(str(tmp_path / "metrics.jsonl")).write([dict(epoch=1), dict(epoch=2)])
  manager.reload()
  with pytest.raises(
    checkpointing.NoRestorableCheckpointError, match="holds metrics of 2 epochs and no checkpoint"
  ):
    checkpointing.restore_newest(manager, _state(0), str(tmp_path))
  jsonl.JsonlWriter(str(tmp_path / "metrics.jsonl")).write([dict(epoch=1)])
  assert checkpointing.restore_newest(manager, "fresh", str(tmp_path)) == (0, "fresh")


# ----------------------------------------------------------------------------- workdir lock


HOLD = """
import sys, time
from gradamp_jax.training.workdir_lock import WorkdirLock
WorkdirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_second_run_on_a_busy_workdir_exits_naming_the_holder(tmp_path, capsys):
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
  )
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(
      WorkdirBusyError,
      match=rf"in use by pid {holder.pid} on host "
      rf"{os.uname().nodename} since",
    ):
      WorkdirLock(str(tmp_path)).acquire()
    # The command line: exit status 1 and the holder named, before any data is read
    # (data_dir is empty and download is off: reading would fail with another message).
    result = subprocess.run(
      [
        sys.executable,
        "-m",
        "gradamp_jax.main",
        "--config",
        "configs/quickstart.py",
        "--workdir",
        str(tmp_path),
        "--config.download=false",
        f"--config.data_dir={tmp_path}",
      ],
      cwd=ROOT,
      capture_output=True,
      text=True,
      timeout=120,
    )
    assert result.returncode == 1
    assert f"is in use by pid {holder.pid} on host" in result.stderr, result.stderr
  finally:
    holder.kill()
    holder.wait()
  # Its holder was killed: the lock is stale and taken over with a warning.
  capsys.readouterr()
  lock = WorkdirLock(str(tmp_path)).acquire()
  err = capsys.readouterr().err
  assert f"taking over the lock of pid {holder.pid}" in err and "no longer running" in err
  lock.release()
  WorkdirLock(str(tmp_path)).acquire().release()  # a released lock is not stale: no warning
  assert capsys.readouterr().err == ""


HOLD_AS = """
import fcntl, json, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.pwrite(fd, sys.argv[2].encode(), 0)
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def lost_host_lock(tmp_path):
  """A held lock whose record names a process on a host that is gone (``gnode-lost``), run
  by SLURM job 77 before its first restart; the lock held as a lost host's lock on NFS
  outlives its process: by a live process here."""
  record = dict(pid=4242, host="gnode-lost", started=None, slurm_job="77", slurm_restart=0)
  holder = subprocess.Popen(
    [sys.executable, "-c", HOLD_AS, str(tmp_path), json.dumps(record)],
    stdout=subprocess.PIPE,
    text=True,
  )
  assert holder.stdout.readline() == "held\n"
  yield str(tmp_path)
  holder.kill()
  holder.wait()


def test_a_lock_held_from_another_host_is_refused_naming_both(lost_host_lock, monkeypatch):
  monkeypatch.setenv("SLURM_JOB_ID", "77")  # the same job, not restarted: the holder may run
  monkeypatch.setenv("SLURM_RESTART_COUNT", "0")
  with pytest.raises(WorkdirBusyError) as raised:
    WorkdirLock(lost_host_lock).acquire()
  message = str(raised.value)
  assert "in use by pid 4242 on host gnode-lost (SLURM job 77)" in message
  assert f"this process: pid {os.getpid()} on host {os.uname().nodename} (SLURM job 77)" in message


def test_a_later_run_of_the_holders_slurm_job_breaks_its_lock(lost_host_lock, monkeypatch, capsys):
  monkeypatch.setenv("SLURM_JOB_ID", "77")
  monkeypatch.setenv("SLURM_RESTART_COUNT", "1")  # requeued: the run that held it is gone
  lock = WorkdirLock(lost_host_lock).acquire()
  err = capsys.readouterr().err
  assert "pid 4242 on host gnode-lost (SLURM job 77) holds the lock but is gone" in err
  assert "taking over the lock of pid 4242 on host gnode-lost" in err
  record = json.loads(open(os.path.join(lost_host_lock, ".lock")).read())
  assert (record["pid"], record["slurm_job"], record["slurm_restart"]) == (os.getpid(), "77", 1)
  lock.release()


@pytest.mark.parametrize(
  "holder, state, gone",
  [
    (dict(host="here", pid=None), None, False),  # this host, a live pid (set below)
    (dict(host="here", pid=None, dead=True), None, True),  # this host, its pid gone
    (dict(host="far", pid=1), None, False),  # another host, no scheduler to ask
    (dict(host="far", pid=1, slurm_job="5", slurm_restart=0), "RUNNING", False),
    (dict(host="far", pid=1, slurm_job="5", slurm_restart=0), "COMPLETING", False),
    (dict(host="far", pid=1, slurm_job="5", slurm_restart=0), "cannot tell", False),  # raises
    (dict(host="far", pid=1, slurm_job="5", slurm_restart=0), "PENDING", True),  # requeued
    (dict(host="far", pid=1, slurm_job="5", slurm_restart=0), None, True),  # no longer listed
  ],
)
def test_a_held_lock_is_gone_only_when_its_holder_is_known_gone(holder, state, gone):
  from gradamp_jax.training.workdir_lock import JobStateUnknown, holder_gone

  holder = dict(holder)
  if holder["host"] == "here":
    dead = subprocess.run(
      [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    holder.update(host="node-a", pid=int(dead.stdout) if holder.pop("dead", False) else os.getpid())
  me = dict(host="node-a", pid=os.getpid(), slurm_job="9", slurm_restart=0)
  asked = []

  def job_state(job):
    asked.append(job)
    if state == "cannot tell":  # the scheduler could not be asked
      raise JobStateUnknown("squeue: timed out")
    return state

  result = holder_gone(holder, me, job_state=job_state)
  assert result is gone
  assert asked == (["5"] if "slurm_job" in holder else [])


# ----------------------------------------------------------------------------- JSON lines


def test_jsonl_never_shows_a_broken_line(tmp_path):
  path = str(tmp_path / "metrics.jsonl")
  writer = jsonl.JsonlWriter(path)
  writer.write([dict(epoch=1, loss=0.5), dict(epoch=2, loss=0.25)])
  with open(path, "a") as f:
    f.write('{"epoch": 3, "lo')  # what a cut-off write would leave
  assert [r["epoch"] for r in jsonl.read_jsonl(path)] == [1, 2]
  from gradamp_jax import analysis

  assert list(analysis.read_frame(str(tmp_path), "metrics.jsonl")["epoch"]) == [1, 2]
  jsonl.JsonlWriter(path, keep=lambda r: True).write([dict(epoch=3, loss=0.125)])
  assert [r["epoch"] for r in jsonl.read_jsonl(path)] == [1, 2, 3]
  assert open(path).read().endswith('"loss": 0.125}\n')


def test_jsonl_takes_back_a_short_write(tmp_path, monkeypatch):
  path = str(tmp_path / "x.jsonl")
  writer = jsonl.JsonlWriter(path)
  writer.write([dict(a=1)])
  real_write = os.write
  monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:5]))  # disk full
  with pytest.raises(OSError, match="wrote 5 of"):
    writer.write([dict(a=2), dict(a=3)])
  monkeypatch.undo()
  assert open(path).read() == '{"a": 1}\n'


WRITER = """
import sys
from gradamp_jax.jsonl import JsonlWriter
w = JsonlWriter(sys.argv[1])
print("go", flush=True)
i = 0
while True:
  w.write([dict(epoch=i, values=list(range(i % 50)))] * 3)
  i += 1
"""


def test_jsonl_killed_writer_leaves_whole_rows(tmp_path):
  path = str(tmp_path / "rows.jsonl")
  for delay in (0.05, 0.2, 0.4):
    writer = subprocess.Popen(
      [sys.executable, "-c", WRITER, path], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert writer.stdout.readline() == "go\n"
    time.sleep(delay)
    writer.kill()
    writer.wait()
    rows = jsonl.read_jsonl(path)
    assert rows and len(rows) % 3 == 0  # one write() per call: all three rows or none
    assert open(path, "rb").read().endswith(b"\n")


# ----------------------------------------------------------------------------- two processes


def run_two_processes(workdir, faults=(None, None)):
  """Both processes of a run on this machine, one CPU device each, over gloo."""
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  env = dict(
    os.environ,
    FAULT_LOAD_LOG=str(workdir) + ".loads",
    XLA_FLAGS="--xla_force_host_platform_device_count=1",
  )
  processes = []
  for i, fault in enumerate(faults):
    command = [sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), str(workdir)]
    command += ([fault] if fault else []) + [
      "--distributed",
      f"--coordinator_address=127.0.0.1:{port}",
      "--num_processes=2",
      f"--process_id={i}",
    ]
    processes.append(
      subprocess.Popen(
        command, cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
      )
    )
  results = []
  for p in processes:
    out, err = p.communicate(timeout=600)
    results.append((p.returncode, out, err))
  return results


def test_two_processes_train_together_like_one_process_with_two_devices(tmp_path, reference):
  workdir = tmp_path / "run"
  (rc0, out0, err0), (rc1, out1, err1) = run_two_processes(workdir)
  assert (rc0, rc1) == (0, 0), err0[-2000:] + err1[-2000:]
  assert "devices: [CpuDevice(id=0), CpuDevice(id=2048)]" in out0  # one per process
  # Only the lead reports and writes: one row per epoch, no duplicates.
  assert out0.count("epoch 3/3") == 1 and "epoch 1/3" not in out1
  (rows, leaves), (want_rows, want_leaves) = outputs(workdir), reference
  assert [r["epoch"] for r in rows["metrics.jsonl"]] == [1, 2, 3]
  assert rows == want_rows
  for a, b in zip(leaves, want_leaves):
    np.testing.assert_array_equal(a, b)
  # The lead reads first and may prepare the data; the other only reads what is prepared.
  loads = [line.split() for line in open(str(workdir) + ".loads")]
  lead_end = next(float(t) for p, what, download, t in loads if (p, what) == ("0", "end"))
  other_start = next(float(t) for p, what, download, t in loads if (p, what) == ("1", "start"))
  assert {(p, download) for p, _, download, _ in loads} == {("0", "True"), ("1", "False")}
  assert lead_end <= other_start


def test_a_process_that_dies_ends_the_other_with_a_clear_message(tmp_path):
  (rc0, _, err0), (rc1, _, _) = run_two_processes(tmp_path / "run", faults=(None, "KILL@2.2"))
  assert rc1 == KILLED
  assert rc0 == 1, err0[-3000:]
  assert "error: process 0: another process of this run ended, so this one stops too" in err0
