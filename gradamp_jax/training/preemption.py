"""Stopping at a step boundary when asked: SIGTERM, SIGINT, SIGUSR1 and SIGUSR2.

While :class:`StopRequest` is installed such a signal only sets a flag; the training loop
saves a checkpoint and raises :class:`Preempted`, and ``gradamp_jax.main`` exits with
:data:`EXIT_PREEMPTED`. A second identical signal acts as usual.
"""

from __future__ import annotations

import signal
import sys
import threading

# EX_TEMPFAIL of sysexits.h: "try again later". Not 0, 1 (errors) or 128 + SIGTERM.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)


class Preempted(Exception):
  """The run stopped on a signal after saving a checkpoint at update ``step``."""

  def __init__(self, signame: str, step: int, checkpoint_dir: str):
    super().__init__(
      f"stopped on {signame} after saving a checkpoint at update {step} in "
      f"{checkpoint_dir}; run the same command again to resume"
    )
    self.signame, self.step = signame, step


class StopRequest:
  """Catches :data:`SIGNALS` while installed; ``requested()`` says whether one came (to any
  process of the run).

  Example (the training loop saves a checkpoint, then raises :class:`Preempted`):
    >>> import os, signal
    >>> with StopRequest() as stop:
    ...   for step in range(5):
    ...     if step == 2:
    ...       os.kill(os.getpid(), signal.SIGUSR1)  # as a scheduler would
    ...     if stop.requested():
    ...       break
    >>> step, stop.signame
    (2, 'SIGUSR1')
  """

  def __init__(self):
    self.signame: str | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    self.signame = signal.Signals(signum).name
    print(
      f"received {self.signame}: saving a checkpoint at the next step boundary, then "
      f"exiting with status {EXIT_PREEMPTED}; send it again to stop at once",
      file=sys.stderr,
      flush=True,
    )
    signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

  def requested(self) -> bool:
    import jax

    if jax.process_count() == 1:
      return self.signame is not None
    import numpy as np
    from jax.experimental import multihost_utils

    flags = multihost_utils.process_allgather(np.int32(self.signame is not None))
    if self.signame is None and np.any(flags):
      self.signame = "a signal to another process"
    return bool(np.any(flags))

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for sig in SIGNALS:
        self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def __exit__(self, *exc):
    for sig, previous in self._previous.items():
      signal.signal(sig, previous)
    self._previous.clear()
