"""The run folder: the name of every file a run keeps in its workdir, with their readers
and writers (docs/training.md lists the files). Everything opens a run's files through this
module. JSON files are replaced whole; JSON-lines files are appended whole
(:mod:`gradamp_jax.jsonl`). A sweep's root holds :data:`SWEEP` beside its runs' folders.

>>> import tempfile
>>> workdir = tempfile.mkdtemp()
>>> write_json(workdir, RUN_INFO, {"steps_per_epoch": 4})
>>> read_json(workdir, RUN_INFO)["steps_per_epoch"]
4
>>> read_json(workdir, CONFIG, default={})
{}
>>> is_run(workdir)
False
"""

from __future__ import annotations

import json
import os
from typing import Any, Callable, Iterable

import ml_collections

from gradamp_jax import jsonl

CONFIG = "config.json"
RUN_INFO = "run.json"
FORK = "fork.json"
METRICS = "metrics.jsonl"
LAYER_STATS = "layer_stats.jsonl"
DIRECTIONALITY = "directionality.jsonl"
# metrics.jsonl: the columns that time an epoch, among them the mark of the first epoch after
# a start of training, whose warm-up makes its time incomparable (absent in older files).
FIRST_AFTER_START = "first_epoch_after_start"
TIMING_FIELDS = ("epoch_seconds", "images_per_second", FIRST_AFTER_START)
# The columns of a directionality.jsonl row besides one per tracked measure.
DIRECTIONALITY_KEYS = ("epoch", "layer", "index", "eligible")
CHECKPOINTS = "checkpoints"
PARTIAL_EPOCH = "partial_epoch.json"
BAD_CHECKPOINTS = "bad_checkpoints"
TENSORBOARD = "tensorboard"
LOCK = ".lock"
SWEEP = "sweep.json"
# Folders of a run that hold no run folders (not searched by find_runs).
NOT_RUNS = (CHECKPOINTS, BAD_CHECKPOINTS, TENSORBOARD)

# Config fields that do not change what a run computes: it resumes under other values.
_DATA_LOCATION = ("data_dir", "image_folder", "download")
RESUMABLE_FIELDS = _DATA_LOCATION + ("eval_batch_size", "steps_per_dispatch", "keep_checkpoints")

_REQUIRED = object()


def path(workdir: str, name: str) -> str:
  """The path of file ``name`` (one of this module's names) of the run in ``workdir``."""
  return os.path.join(workdir, name)


def is_run(workdir: str) -> bool:
  """Whether ``workdir`` holds a run: its config and at least the start of its metrics."""
  return all(os.path.isfile(path(workdir, name)) for name in (CONFIG, METRICS))


def read_json(workdir: str, name: str, *, default: Any = _REQUIRED) -> Any:
  """The contents of JSON file ``name`` of ``workdir``.

  ``default`` is returned when the file is missing or does not parse; without it, those
  raise ``OSError`` or ``ValueError``.
  """
  try:
    with open(path(workdir, name)) as f:
      return json.load(f)
  except (OSError, ValueError):
    if default is _REQUIRED:
      raise
    return default


def write_json(workdir: str, name: str, value: Any) -> None:
  """Replaces JSON file ``name`` of ``workdir`` with ``value``, whole."""
  jsonl.replace_text(path(workdir, name), json.dumps(value, indent=2))


def write_config(workdir: str, config) -> None:
  """Writes a run's resolved ``config`` (an ``ml_collections.ConfigDict``) as :data:`CONFIG`."""
  jsonl.replace_text(path(workdir, CONFIG), config.to_json_best_effort(indent=2))


def read_rows(
  workdir: str, name: str, *, missing_ok: bool = False, until_epoch: int | None = None
) -> list[dict]:
  """The complete rows of JSON-lines file ``name`` of ``workdir``.

  ``missing_ok``: ``[]`` for a missing file, not ``FileNotFoundError``; ``until_epoch``:
  only the rows of epochs up to this one.
  """
  rows = jsonl.read_jsonl(path(workdir, name), missing_ok=missing_ok)
  return rows if until_epoch is None else [r for r in rows if r["epoch"] <= until_epoch]


def rows_writer(workdir: str, name: str, keep: Callable[[dict], bool] | None = None):
  """A :class:`gradamp_jax.jsonl.JsonlWriter` appending rows to JSON-lines file ``name`` of
  ``workdir`` (``keep`` as there)."""
  return jsonl.JsonlWriter(path(workdir, name), keep=keep)


def append_fork(workdir: str, parent: str, epoch: int, step: int) -> None:
  """Adds a fork from ``parent`` at the end of ``epoch`` (update ``step``) to :data:`FORK`."""
  history = read_json(workdir, FORK, default=[])
  history.append(dict(parent=os.path.abspath(parent), epoch=epoch, step=step))
  write_json(workdir, FORK, history)


def newest_step(workdir: str) -> int:
  """The newest checkpointed update of the run in ``workdir`` (0 when none)."""
  folder = path(workdir, CHECKPOINTS)
  if not os.path.isdir(folder):
    return 0
  return max((int(d) for d in os.listdir(folder) if d.isdigit()), default=0)


def sweep_record(tree: int | None = None) -> str:
  """The name of a sweep's record: the whole sweep's, or tree ``tree``'s job's."""
  return SWEEP if tree is None else f"sweep-tree{tree}.json"


def flat_config(config, prefix: str = "") -> dict[str, Any]:
  """``{"a.b": value}`` for every leaf field of a config dict or ``ConfigDict``.

  >>> flat_config({"seed": 0, "amplification": {"method": "all", "factor": 2.0}})
  {'seed': 0, 'amplification.method': 'all', 'amplification.factor': 2.0}
  """
  out = {}
  for key in config.keys():
    value = config[key]
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      out.update(flat_config(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value
  return out


def differing_fields(a: dict, b: dict, ignore: Iterable[str] = ()) -> list[str]:
  """The fields (dotted, sorted) two :data:`CONFIG` dicts differ in, less
  :data:`RESUMABLE_FIELDS` and ``ignore`` (names, or prefixes ending in ``.``).

  >>> differing_fields({"seed": 0, "model": "vgg11"}, {"seed": 1, "model": "vgg11"})
  ['seed']
  >>> differing_fields({"seed": 0, "data_dir": "a"}, {"seed": 1, "data_dir": "b"}, ["seed"])
  []
  """
  ignore = set(RESUMABLE_FIELDS) | set(ignore)
  prefixes = tuple(i for i in ignore if i.endswith("."))
  a, b = flat_config(a), flat_config(b)
  differ = [k for k in set(a) | set(b) if a.get(k) != b.get(k)]
  return sorted(k for k in differ if k not in ignore and not k.startswith(prefixes))


def find_runs(root: str) -> list[str]:
  """Run folders under ``root`` at any depth, sorted (not searching :data:`NOT_RUNS`).

  Raises:
    ValueError: ``root`` is not a directory.
  """
  if not os.path.isdir(root):
    raise ValueError(f"ROOT {root!r} is not a directory")
  found = []
  for folder, subfolders, _ in os.walk(root):
    if is_run(folder):
      found.append(folder)
    subfolders[:] = sorted(s for s in subfolders if s not in NOT_RUNS and not s.startswith("."))
  return sorted(found)
