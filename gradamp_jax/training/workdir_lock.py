"""One writer per workdir: ``WORKDIR/.lock``, held with ``flock`` and naming its holder.

A free lock's file is taken over with a warning; a held one only when its holder is known to be
gone, never by a timeout (docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time

from gradamp_jax import run_folder


class WorkdirBusyError(RuntimeError):
  """Another live run holds the workdir."""


class WorkdirLock:
  """Holds ``workdir``'s lock from :meth:`acquire` until :meth:`release` or process exit.

  Example:
    >>> import tempfile
    >>> workdir = tempfile.mkdtemp()
    >>> with WorkdirLock(workdir):  # a second holder, here or in another process, is refused
    ...   WorkdirLock(workdir).acquire()
    Traceback (most recent call last):
      ...
    gradamp_jax.training.workdir_lock.WorkdirBusyError: ...
  """

  def __init__(self, workdir: str):
    self.path = run_folder.path(workdir, run_folder.LOCK)
    self._fd: int | None = None

  def acquire(self) -> "WorkdirLock":
    """Takes the lock at once or raises :class:`WorkdirBusyError` naming the holder."""
    me = holder_record()
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd)
      os.close(fd)
      if not holder_gone(holder, me):
        raise WorkdirBusyError(
          f"workdir: {os.path.dirname(self.path)!r} is in use by {_describe(holder)}; wait for "
          f"it to end or use another workdir (this process: {_describe(me)}; lock: {self.path})"
        ) from None
      fd = self._break(holder)
    previous = _read(fd)
    if previous:
      print(
        f"warning: taking over the lock of {_describe(previous)}, which is no longer "
        f"running ({self.path})",
        file=sys.stderr,
        flush=True,
      )
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

  def _break(self, holder: dict) -> int:
    """A new lock file in place of one whose holder is gone but whose ``flock`` remains."""
    print(
      f"warning: {_describe(holder)} holds the lock but is gone (its host lost); breaking "
      f"it ({self.path})",
      file=sys.stderr,
      flush=True,
    )
    os.unlink(self.path)
    try:
      fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
      raise WorkdirBusyError(
        f"workdir: another process took the lock first ({self.path})"
      ) from None
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.pwrite(fd, json.dumps(holder).encode(), 0)  # named in the takeover warning
    return fd

  def release(self) -> None:
    """Empties the lock file and releases the lock (an empty file is not a stale lock)."""
    if self._fd is None:
      return
    os.ftruncate(self._fd, 0)
    fcntl.flock(self._fd, fcntl.LOCK_UN)
    os.close(self._fd)
    self._fd = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()


def holder_record() -> dict:
  """This process as a lock file names it: host, pid, start time and, under SLURM, the job
  (``slurm_job``) and its restart count (``slurm_restart``)."""
  me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time())
  if os.environ.get("SLURM_JOB_ID"):
    me["slurm_job"] = os.environ["SLURM_JOB_ID"]
    me["slurm_restart"] = int(os.environ.get("SLURM_RESTART_COUNT") or 0)
  return me


def holder_gone(holder: dict | None, me: dict, job_state=None) -> bool:
  """Whether the ``holder`` of a held lock is known to be gone (its lock left by a lost host);
  ``job_state(job)``: a SLURM job's state (``squeue``'s by default), ``None`` when no longer
  listed; it raises :class:`JobStateUnknown` when it cannot tell, and the lock is kept."""
  if not holder or holder.get("pid") == "?":
    return False
  if holder.get("host") == me["host"]:
    return not _pid_alive(holder["pid"])
  job = holder.get("slurm_job")
  if not job:
    return False  # another host, no scheduler to ask: only its owner can tell
  if job == me.get("slurm_job"):
    return holder.get("slurm_restart", 0) < me["slurm_restart"]  # an earlier run of this job
  try:
    return (job_state or squeue_state)(job) not in RUNNING_STATES
  except JobStateUnknown:
    return False  # cannot tell: the lock is kept


# The job states in which a SLURM job's processes may still run.
RUNNING_STATES = ("RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "SIGNALING")


class JobStateUnknown(Exception):
  """The scheduler could not be asked for a job's state."""


def squeue_state(job: str) -> str | None:
  """SLURM's state of ``job`` (``RUNNING``, ``PENDING``, …), None when it no longer lists
  it; raises :class:`JobStateUnknown` when the scheduler cannot be asked."""
  try:
    done = subprocess.run(
      ["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True, timeout=30
    )
  except (OSError, subprocess.TimeoutExpired) as e:
    raise JobStateUnknown(f"squeue: {e}") from None
  if done.returncode and "Invalid job id" not in done.stderr:
    raise JobStateUnknown(f"squeue: {done.stderr.strip()}")
  return done.stdout.strip() or None


def _pid_alive(pid) -> bool:
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, ValueError, TypeError):
    pass
  return True


def _read(fd: int) -> dict | None:
  text = os.pread(fd, 4096, 0).decode(errors="replace").strip()
  if not text:
    return None
  try:
    return json.loads(text)
  except ValueError:
    return dict(pid="?", host="?", started=None)


def _describe(holder: dict | None) -> str:
  if not holder:
    return "another run (lock file empty)"
  started, when = holder.get("started"), ""
  if isinstance(started, (int, float)):
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(started))
  job = f" (SLURM job {holder['slurm_job']})" if holder.get("slurm_job") else ""
  return f"pid {holder.get('pid')} on host {holder.get('host')}{job}{when}"
