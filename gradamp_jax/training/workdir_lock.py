"""One writer per workdir: ``WORKDIR/.lock``, held with ``flock`` and naming its holder.

The OS releases an ``flock`` when its process ends, however it ends, so a lock file whose
lock is free was left by a run that is gone: it is taken over with a warning.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
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
    fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _describe(_read(fd))
      os.close(fd)
      raise WorkdirBusyError(
        f"workdir: {os.path.dirname(self.path)!r} is in use by {holder}; wait for it to "
        f"end or use another workdir (lock: {self.path})"
      ) from None
    previous = _read(fd)
    if previous:
      print(
        f"warning: taking over the lock of {_describe(previous)}, which is no longer "
        f"running ({self.path})",
        file=sys.stderr,
        flush=True,
      )
    me = dict(pid=os.getpid(), host=socket.gethostname(), started=time.time())
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(me).encode(), 0)
    os.fsync(fd)
    self._fd = fd
    return self

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
  return f"pid {holder.get('pid')} on host {holder.get('host')}{when}"
