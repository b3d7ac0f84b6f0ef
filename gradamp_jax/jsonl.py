"""JSON-lines outputs that a crash never leaves half-written (docs/reliability.md).

Each :meth:`JsonlWriter.write` appends its rows with one ``write`` call, then ``fsync``; an
unterminated tail (a write cut short) is dropped by the next writer and ignored by
:func:`read_jsonl`.
"""

from __future__ import annotations

import json
import os
from typing import Callable, Iterable


class JsonlWriter:
  """Appends JSON rows to ``path``; ``keep``: ``None`` starts the file afresh, else the rows
  already in it for which this predicate is false are dropped."""

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
  """The complete rows of a JSON-lines file (``[]`` when missing and ``missing_ok``): an
  unterminated last line is ignored, another bad line raises ``ValueError`` naming it."""
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
