"""SLURM jobs through submitit: one job per run, requeued when preempted or timed out.

:class:`TrainingJob` runs a training command in a child process. When SLURM preempts the
job or its time limit nears, the child checkpoints and stops, and the job is requeued to run
the same command, which resumes.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time

import submitit

from gradamp_jax.training.preemption import EXIT_PREEMPTED


class TrainingJob(submitit.helpers.Checkpointable):
  """A submitit job running ``command`` (a shell-quoted string); requeued on preemption.

  On submitit's preemption signal (:meth:`checkpoint`) the child gets SIGTERM and the job
  is requeued once it has saved; a child that exits ``EXIT_PREEMPTED`` is requeued too.
  """

  def __init__(self, command: str, poll_s: float = 0.5):
    self.command, self.poll_s = command, poll_s
    self._child: subprocess.Popen | None = None

  def __call__(self) -> int:
    print(f"running: {self.command}", flush=True)
    self._child = subprocess.Popen(shlex.split(self.command))
    while (status := self._child.poll()) is None:  # poll, not wait: see checkpoint()
      time.sleep(self.poll_s)
    if status == EXIT_PREEMPTED:  # the cluster's signal reached the child first
      os.kill(os.getpid(), submitit.JobEnvironment._usr_sig())  # submitit requeues
      time.sleep(60)  # the requeue exits this process
    if status != 0:
      raise RuntimeError(f"the training command exited with status {status}: {self.command}")
    return status

  def checkpoint(self) -> submitit.helpers.DelayedSubmission:
    """Called by submitit in its signal handler: stop the child, then requeue."""
    child = self._child
    if child is not None and child.returncode is None:
      try:
        child.send_signal(signal.SIGTERM)
        os.waitpid(child.pid, 0)  # Popen.wait could deadlock on the lock poll() holds
      except (ProcessLookupError, ChildProcessError):
        pass
    print("requeueing: the next job resumes from the checkpoint", file=sys.stderr, flush=True)
    return submitit.helpers.DelayedSubmission(TrainingJob(self.command, self.poll_s))

  def __getstate__(self):
    return dict(command=self.command, poll_s=self.poll_s, _child=None)


def submit(
  commands: list[str],
  folder: str,
  *,
  cluster: str | None = None,
  partition: str | None = None,
  time_min: int = 24 * 60,
  gpus: int = 1,
  cpus: int | None = None,
  mem_gb: float | None = None,
  name: str = "gradamp",
  signal_delay_s: int = 120,
  nodes: int = 1,
) -> list:
  """Submits one job per command (a job array on SLURM); returns the submitit jobs.

  Args:
    folder: where submitit keeps its job scripts and logs (``%j`` is the job id).
    cluster: ``None`` picks SLURM when available, ``"local"`` runs here, ``"slurm"`` insists.
    partition, time_min, gpus, cpus, mem_gb, name: what each job asks SLURM for.
    signal_delay_s: the pre-timeout signal comes this many seconds before the limit.
    nodes: nodes per job, one task (one process of the run) on each: the command runs on
      every node and, with ``--distributed``, initialises JAX's multi-process runtime from
      SLURM's environment (``gpus`` and ``cpus`` are per node).
  """
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  params = dict(timeout_min=time_min, gpus_per_node=gpus, tasks_per_node=1, nodes=nodes, name=name)
  params.update({k: v for k, v in dict(cpus_per_task=cpus, mem_gb=mem_gb).items() if v})
  if executor.cluster == "slurm":
    params.update(
      slurm_signal_delay_s=signal_delay_s, slurm_additional_parameters={"requeue": True}
    )
    if partition:
      params["slurm_partition"] = partition
  executor.update_parameters(**params)
  with executor.batch():  # the jobs have their ids once it ends
    return [executor.submit(TrainingJob(command)) for command in commands]


# Words of sbatch's refusals and the option behind each.
_REFUSED_OPTIONS = (
  ("partition", "partition"),
  ("generic resource", "gpus"),
  ("gres", "gpus"),
  ("memory", "mem_gb"),
  ("time limit", "time_min"),
  ("processor", "cpus"),
  ("cpu", "cpus"),
)


def submit_sweep(args, commands: list[str], per: str = "run") -> list:
  """Submits ``commands`` as SLURM jobs (one ``per`` run, cohort, tree, ...), logs in
  ``ROOT/slurm/``; when sbatch refuses them, exits with one line (:func:`refusal`)."""
  logs = os.path.join(args.root, "slurm")
  options = ("cluster", "partition", "time_min", "gpus", "cpus", "mem_gb", "nodes")
  try:
    jobs = submit(commands, os.path.join(logs, "%j"), **{k: getattr(args, k) for k in options})
  except submitit.core.utils.FailedJobError as e:
    raise SystemExit(refusal(str(e), args)) from None
  ids = ", ".join(j.job_id for j in jobs)
  print(f"submitted {len(jobs)} jobs (one per {per}): {ids}; logs in {logs}", flush=True)
  return jobs


def refusal(error: str, args) -> str:
  """One line from sbatch's error output: its first reason, and the option it points at."""
  lines = [line.removeprefix("sbatch: error: ").strip() for line in error.splitlines()]
  reason = next((line for line in lines if line), "sbatch failed")
  option = next((o for word, o in _REFUSED_OPTIONS if word in reason.lower()), None)
  hint = f" (--{option} {getattr(args, option)})" if option else ""
  return f"sweep: sbatch refused the jobs: {reason}{hint}"
