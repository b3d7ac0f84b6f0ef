"""A one-node SLURM cluster on this machine, for the tests: Debian's slurm-wlm and munge.

    python tests/slurm_cluster.py start DIR   # prints the SLURM_CONF path once the node is idle
    python tests/slurm_cluster.py stop DIR

:func:`start` installs the packages when they are missing (apt, as root), writes a minimal
``slurm.conf`` into ``DIR`` (one node = this machine with its CPUs and memory, one partition
``debug``, ``select/cons_tres``, no accounting), starts munged, slurmctld and slurmd as root
and waits until ``sinfo`` shows the node idle. :func:`start` raises :class:`Unavailable`
with the reason where it cannot (not root, no apt, packages not installable).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

PACKAGES = ("slurm-wlm", "munge")
PARTITION = "debug"


class Unavailable(RuntimeError):
  """No cluster can be started here; the message says why."""


def _run(*command, check=True, **kw):
  return subprocess.run(command, check=check, capture_output=True, text=True, **kw)


def install() -> None:
  if all(shutil.which(b) for b in ("slurmctld", "slurmd", "sbatch", "munged")):
    return
  if os.geteuid() != 0:
    raise Unavailable("slurm-wlm is not installed and installing it needs root")
  if not shutil.which("apt-get"):
    raise Unavailable("slurm-wlm is not installed and there is no apt-get")
  env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
  done = _run("apt-get", "install", "-y", "-q", *PACKAGES, check=False, env=env)
  if done.returncode:
    _run("apt-get", "update", "-q", check=False, env=env)
    done = _run("apt-get", "install", "-y", "-q", *PACKAGES, check=False, env=env)
  if done.returncode:
    raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {done.stderr[-300:]}")


def config_text(folder: str) -> str:
  host = socket.gethostname()
  memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
  return "\n".join(
    [
      "ClusterName=gradamp-test",
      f"SlurmctldHost={host}",
      "SlurmUser=root",
      "SlurmdUser=root",
      "AuthType=auth/munge",
      # A requeued job waits cred_expire seconds before it may start again (default 120).
      "AuthInfo=cred_expire=10",
      f"StateSaveLocation={folder}/state",
      f"SlurmdSpoolDir={folder}/spool",
      f"SlurmctldPidFile={folder}/slurmctld.pid",
      f"SlurmdPidFile={folder}/slurmd.pid",
      f"SlurmctldLogFile={folder}/slurmctld.log",
      f"SlurmdLogFile={folder}/slurmd.log",
      "SlurmctldPort=6817",
      "SlurmdPort=6818",
      "ProctrackType=proctrack/linuxproc",
      "TaskPlugin=task/none",
      "SelectType=select/cons_tres",
      "SelectTypeParameters=CR_CPU",
      "SchedulerType=sched/backfill",
      "ReturnToService=2",
      "MpiDefault=none",
      "JobCompType=jobcomp/none",
      "AccountingStorageType=accounting_storage/none",
      "JobAcctGatherType=jobacct_gather/none",
      "KillWait=10",
      "MinJobAge=600",
      f"NodeName={host} CPUs={os.cpu_count()} RealMemory={memory_mb * 9 // 10} State=UNKNOWN",
      f"PartitionName={PARTITION} Nodes={host} Default=YES MaxTime=INFINITE State=UP",
      "",
    ]
  )


def start(folder: str, timeout_s: float = 60) -> str:
  """Starts the cluster; returns the path of its ``slurm.conf`` (set ``SLURM_CONF`` to it)."""
  install()
  folder = os.path.abspath(folder)
  for sub in ("state", "spool", "munge"):
    os.makedirs(os.path.join(folder, sub), exist_ok=True)
  conf = os.path.join(folder, "slurm.conf")
  with open(conf, "w") as f:
    f.write(config_text(folder))
  env = dict(os.environ, SLURM_CONF=conf)
  _start_munge()
  _run("slurmctld", "-c", "-f", conf, env=env)
  _run("slurmd", "-c", "-f", conf, env=env)
  deadline = time.monotonic() + timeout_s
  while time.monotonic() < deadline:
    state = _run("sinfo", "-h", "-o", "%t", check=False, env=env).stdout.strip()
    if state == "idle":
      return conf
    time.sleep(0.5)
  raise Unavailable(f"the node is not idle after {timeout_s:.0f} s (sinfo: {state!r})")


def _start_munge() -> None:
  if _run("pgrep", "-x", "munged", check=False).returncode == 0:
    return
  key = "/etc/munge/munge.key"
  if not os.path.exists(key):
    _run("mungekey", "--create", check=False) if shutil.which("mungekey") else None
  os.makedirs("/run/munge", exist_ok=True)
  shutil.chown("/run/munge", "munge", "munge")
  _run("runuser", "-u", "munge", "--", "munged", "--force")


def stop(folder: str) -> None:
  """Cancels every job and stops slurmd and slurmctld (munged is left to the machine)."""
  conf = os.path.join(os.path.abspath(folder), "slurm.conf")
  env = dict(os.environ, SLURM_CONF=conf)
  _run("scancel", "--full", "-u", "root", check=False, env=env)
  for daemon in ("slurmd", "slurmctld"):
    pid_file = os.path.join(os.path.abspath(folder), f"{daemon}.pid")
    if os.path.exists(pid_file):
      with open(pid_file) as f:
        pid = int(f.read().strip() or 0)
      if pid:
        _run("kill", str(pid), check=False)
  time.sleep(1)


if __name__ == "__main__":
  action, where = sys.argv[1], sys.argv[2]
  if action == "start":
    print(start(where))
  else:
    stop(where)
