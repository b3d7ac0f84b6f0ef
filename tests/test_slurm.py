"""Sweeps through a real SLURM scheduler: a two-node cluster on this machine, each node a
host of its own in a network namespace (tests/slurm_cluster.py, Debian's slurm-wlm), started
by the tests and stopped after.

Where no cluster can be started (not root, no apt) the tests are skipped with the reason;
with ``$GRADAMP_REQUIRE_SLURM`` set (CI) they fail instead.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import slurm_cluster
from conftest import uninterrupted_run
from test_input_pipeline import _write_folder

from benchmarks import gpu_checks
from gradamp_jax import jsonl, run_folder
from gradamp_jax.sweeps import cluster
from gradamp_jax.sweeps import launcher as sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow
OPTIONS = ["--partition", slurm_cluster.PARTITION, "--gpus", "0", "--cpus", "1", "--time_min", "10"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
  folder = str(tmp_path_factory.mktemp("slurm"))
  try:
    conf = slurm_cluster.start(folder)
  except slurm_cluster.Unavailable as e:
    if os.environ.get("GRADAMP_REQUIRE_SLURM"):
      pytest.fail(f"no SLURM cluster: {e}")
    pytest.skip(f"no SLURM cluster here: {e}")
  before = os.environ.get("SLURM_CONF")
  os.environ["SLURM_CONF"] = conf
  version = subprocess.run(["sinfo", "--version"], capture_output=True, text=True).stdout
  print(f"SLURM cluster up: {version.strip()}", file=sys.stderr)
  yield conf
  slurm_cluster.stop(folder)
  if before is None:
    os.environ.pop("SLURM_CONF", None)
  else:
    os.environ["SLURM_CONF"] = before


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  layout = {
    "train": {"ant": 16, "bee": 16, "cat": 16},
    "test": {"ant": 4, "bee": 4, "cat": 4},
  }
  _write_folder(root, layout)
  return str(root)


def wait_for(job_ids, timeout_s=600):
  """Waits until SLURM lists none of ``job_ids`` (finished, requeued ones included)."""
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    listed = subprocess.run(
      ["squeue", "-h", "-o", "%i %T", "-j", ",".join(job_ids)], capture_output=True, text=True
    ).stdout.split()
    if not listed:
      return
    time.sleep(1)
  raise AssertionError(f"jobs {job_ids} still queued after {timeout_s} s: {listed}")


def run_sweep(root, mode, images, grid, *extra):
  return sweep.main(
    [
      "--config",
      "tests/slurm_sweep.py",
      "--sweep",
      f"grid={grid}",
      "--root",
      str(root),
      "--mode",
      mode,
      *extra,
      f"--config.image_folder={images}",
    ]
  )


def assert_same_run(a, b):
  """Bitwise the same run (rows less timings, the newest checkpoint restored onto one device
  whatever devices and processes saved it): the GPU suite's comparison."""
  problems, _ = gpu_checks.compare(
    gpu_checks.read_run(a), gpu_checks.read_run(b), gpu_checks.BITWISE
  )
  assert not problems, problems


def job_record(job_id) -> dict:
  """The scheduler's own record of a job (``scontrol show job``), as ``{field: value}``."""
  text = subprocess.run(
    ["scontrol", "show", "job", "-o", str(job_id)], capture_output=True, text=True, check=True
  ).stdout
  return dict(item.split("=", 1) for item in text.split() if "=" in item)


def with_option(options, name, value):
  return [
    x for k, v in dict(zip(options[::2], options[1::2]), **{name: value}).items() for x in (k, v)
  ]


@pytest.mark.parametrize(
  "grid, extra",
  [("seeds,seeds=4", ["--cohort", "2"]), ("rules", ["--branch", "--cohort", "2"])],
  ids=["seeds-two-cohorts-two-nodes", "rules-branch-cohort"],
)
def test_sweep_through_slurm_equals_the_local_sweep(
  slurm, images, tmp_path, monkeypatch, grid, extra
):
  """Four seeds as two cohorts of two, two jobs of 2 CPUs each: one per node; and a branched
  tree of two thresholds whose members part after the trunk and train their last segment as
  one cohort (one job)."""
  monkeypatch.chdir(ROOT)
  branched = "--branch" in extra
  # Here first: the jobs then load its programs from the session's compilation cache.
  run_sweep(tmp_path / "local", "local", images, grid, *extra)
  options = OPTIONS if branched else with_option(OPTIONS, "--cpus", "2")  # a node each
  jobs = run_sweep(tmp_path / "slurm", "slurm", images, grid, *extra, *options)
  job_ids = [j.job_id for j in jobs]
  assert len(job_ids) == (1 if branched else 2)  # a job per cohort; branched: one tree
  with open(tmp_path / "slurm" / "sweep.json") as f:
    record = json.load(f)
  assert record["tree_jobs" if branched else "cohort_jobs"] == job_ids
  wait_for(job_ids)
  assert [job.result() for job in jobs] == [0] * len(jobs)  # the jobs' training commands
  nodes = [job_record(j)["BatchHost"] for j in job_ids]
  print(f"jobs {job_ids} ran on {nodes}", file=sys.stderr)
  if not branched:
    assert sorted(nodes) == sorted(slurm_cluster.NODES)  # spread over both hosts
  workdirs = [
    os.path.join(tmp_path, "slurm", os.path.basename(r["workdir"])) for r in record["runs"]
  ]
  assert len(workdirs) == (2 if branched else 4)
  for workdir in workdirs:
    assert_same_run(workdir, workdir.replace(str(tmp_path / "slurm"), str(tmp_path / "local")))
    cohort = run_folder.read_json(workdir, run_folder.RUN_INFO)["cohort"]
    assert cohort["size"] == 2 and workdir in cohort["members"]
  if branched:
    tree = run_folder.read_json(tmp_path / "local", run_folder.SWEEP)["branch"]["tree"]
    assert tree[0] == dict(member=record["runs"][0]["name"], trained=[1, 2])  # the trunk


def fault_run(workdir, *extra):
  return f"{sys.executable} {ROOT}/tests/fault_run.py {workdir} {' '.join(extra)}".strip()


@pytest.fixture(scope="module")
def reference():
  """The uninterrupted fault-run (trained once per session: conftest.uninterrupted_run)."""
  return uninterrupted_run()


def job_log(job):
  return job.stdout() + job.stderr()


def lose_node(node: str) -> None:
  """``node`` lost as a host is: every process on it (its slurmd, the job's slurmstepd and
  training processes) killed at once with SIGKILL; no signal reaches the program."""
  pids = subprocess.run(
    ["ip", "netns", "pids", slurm_cluster.namespace(node)], capture_output=True, text=True
  ).stdout.split()
  for pid in map(int, pids):
    try:
      os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
      pass


def wait_until(condition, what: str, job, timeout_s: float = 300) -> None:
  deadline = time.monotonic() + timeout_s
  while not condition():
    assert time.monotonic() < deadline, f"{what} after {timeout_s} s: {job_log(job)}"
    time.sleep(0.2)


def test_a_job_preempted_then_on_a_lost_node_is_requeued_each_time_and_ends_identical(
  slurm, tmp_path, monkeypatch, reference
):
  """One job, two faults: SLURM's pre-timeout signal (``scancel --signal=USR2``) in epoch 2,
  then, once the requeued job has resumed, its node lost (every process on it SIGKILLed, no
  signal reaches the program). A preemption by ``scontrol requeue`` is the two-node run's."""
  monkeypatch.setenv("FAULT_CALL_SECONDS", "0.75")  # 9 calls an epoch: windows for the faults
  workdir = tmp_path / "run"
  (job,) = cluster.submit(
    [fault_run(workdir)], str(tmp_path / "jobs" / "%j"), cluster="slurm", time_min=10, gpus=0
  )
  metrics = workdir / "metrics.jsonl"
  wait_until(lambda: metrics.exists() and jsonl.read_jsonl(metrics), "epoch 1 not done", job)
  subprocess.run(["scancel", "--signal=USR2", job.job_id], check=True)
  wait_until(lambda: "Resumed from the checkpoint" in job_log(job), "not resumed", job)
  lost = job_record(job.job_id)["BatchHost"]
  lose_node(lost)
  try:
    wait_until(
      lambda: slurm_cluster.node_states().get(lost) in ("down", "down*"), "node not down", job, 120
    )
    print(f"job {job.job_id} on {lost}; {lost} marked down", file=sys.stderr)
    wait_for([job.job_id])
  finally:
    slurm_cluster.start_node(lost, slurm)  # back in service for the next tests
  record = job_record(job.job_id)
  print(f"requeued {record['Restarts']} time(s), ended on {record['BatchHost']}", file=sys.stderr)
  assert record["BatchHost"] != lost and int(record["Restarts"]) >= 2
  log = job_log(job)
  assert "requeueing" in log or "received SIGTERM" in log, log  # the signal's requeue
  assert "taking over the lock of pid" in log and f"on host {lost} (SLURM job" in log, log
  assert log.count("Resumed from the checkpoint") >= 2, log
  assert_same_run(str(workdir), reference)


def test_one_run_over_two_nodes_equals_one_process_with_two_devices(
  slurm, tmp_path, monkeypatch, reference
):
  """One process per node (``nodes=2``: srun), JAX's runtime initialised from SLURM's
  environment (gloo between the two hosts), one CPU device each: the reference's run (one
  process, two devices). Requeued by the scheduler in epoch 2, both processes checkpoint at
  the same update and the requeued job resumes."""
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  monkeypatch.setenv("FAULT_CALL_SECONDS", "0.75")  # a window to requeue it in epoch 2
  workdir = tmp_path / "run"
  (job,) = cluster.submit(
    [fault_run(workdir, "--distributed")],
    str(tmp_path / "jobs" / "%j"),
    cluster="slurm",
    time_min=10,
    gpus=0,
    nodes=2,
  )
  # epoch 1's checkpoint done: in epoch 2
  wait_until(lambda: run_folder.newest_step(str(workdir)), "no checkpoint", job)
  subprocess.run(["scontrol", "requeue", job.job_id], check=True)
  wait_for([job.job_id])
  record = job_record(job.job_id)
  print(
    f"job {job.job_id} on {record['NodeList']}, {record['Restarts']} restart(s)", file=sys.stderr
  )
  assert record["NodeList"] == "gnode[1-2]" and int(record["Restarts"]) >= 1
  log = job_log(job)  # the lead process's (task 0) log: it alone reports
  assert "devices: [CpuDevice(id=0), CpuDevice(id=2048)]" in log, log  # one per host
  assert "Resumed from the checkpoint" in log, log
  assert log.count("epoch 3/3") == 1, log
  assert_same_run(str(workdir), reference)


@pytest.mark.parametrize(
  "option, value, words",
  [
    ("--partition", "nosuch", "invalid partition specified: nosuch (--partition nosuch)"),
    ("--gpus", "4", "Invalid generic resource (gres) specification (--gpus 4)"),
    ("--mem_gb", "100000", "Memory specification can not be satisfied (--mem_gb 100000.0)"),
  ],
)
def test_a_request_sbatch_refuses_is_one_line_naming_the_option(
  slurm, images, tmp_path, monkeypatch, option, value, words
):
  monkeypatch.chdir(ROOT)
  with pytest.raises(SystemExit) as raised:
    run_sweep(tmp_path, "slurm", images, "seeds", *with_option(OPTIONS, option, value))
  message = str(raised.value)
  assert message == f"sweep: sbatch refused the jobs: {words}"
