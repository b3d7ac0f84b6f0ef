"""JSON-lines outputs that a crash never leaves half-written (docs/reliability.md).

Each :meth:`JsonlWriter.write` appends its rows with one ``write`` system call, then
``fsync``: a killed process leaves all of those rows or none. A write that still ends short
(a full disk, a power cut) leaves an unterminated tail: opening the file again drops it, and
:func:`read_jsonl` ignores it.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable


class JsonlWriter:
  """Appends JSON rows to ``path``.

  Args:
    path: the file.
    keep: ``None`` starts the file afresh; otherwise a predicate on rows: the rows already
      in the file for which it is false (those past a resumed checkpoint) are dropped.
  """

  def __init__(self, path: str, keep: Callable[[dict], bool] | None = None):
    self.path = path
    if os.path.exists(path) and keep is None:
      os.remove(path)
    elif os.path.exists(path):
      replace_text(path, "".join(json.dumps(r) + "\n" for r in read_jsonl(path) if keep(r)))

  def write(self, rows: Iterable[dict]) -> None:
    data = "".join(json.dumps(row) + "\n" for row in rows).encode()
    if not data:
      return
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      size = os.fstat(fd).st_size
      try:
        written = os.write(fd, data)
        if written != len(data):
          raise OSError(f"{self.path}: wrote {written} of {len(data)} bytes")
        os.fsync(fd)
      except OSError:
        os.ftruncate(fd, size)  # take back a partial write
        raise
    finally:
      os.close(fd)


def read_jsonl(path: str, *, missing_ok: bool = False) -> list[dict]:
  """The complete rows of a JSON-lines file.

  An unterminated last line (a write cut short) is ignored; a line that does not parse
  anywhere else raises ``ValueError`` naming the file and line.

  Args:
    path: the file.
    missing_ok: return ``[]`` for a missing file instead of raising ``FileNotFoundError``.
  """
  if missing_ok and not os.path.exists(path):
    return []
  with open(path, "rb") as f:
    data = f.read()
  complete = data[: data.rfind(b"\n") + 1].decode()
  rows = []
  for number, line in enumerate(complete.splitlines(), 1):
    if line.strip():
      try:
        rows.append(json.loads(line))
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{number}: not a JSON row ({e})") from None
  return rows


def replace_text(path: str, text: str) -> None:
  """Replaces file ``path`` with ``text`` whole: a crash leaves the old file or the new one."""
  tmp = f"{path}.{os.getpid()}.tmp"
  with open(tmp, "w") as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
