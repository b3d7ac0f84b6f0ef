"""TFDS ``cifar10`` / ``cifar100`` read from prepared array_record files, without TensorFlow
(preparing them needs TensorFlow and internet, both checked first)."""

import importlib.util
import operator
import socket
import threading
import urllib.parse

from absl import logging

from gradamp_jax.input_pipeline.image_folder import LAYOUT
from gradamp_jax.input_pipeline.split import Split, read_split

DATASETS = ("cifar10", "cifar100")
_CONNECT_TIMEOUT_S = 5.0


def read(dataset: str, data_dir: str | None, train_split: str, download: bool):
  """Returns (name, class_names, train, test) read from TFDS array_record files."""
  if dataset not in DATASETS:
    raise ValueError(
      f"dataset must be one of {', '.join(DATASETS)} (or pass --config.image_folder=PATH), "
      f"got {dataset!r}"
    )
  import tensorflow_datasets as tfds  # here: an image folder is read without it

  # tfds.data_source needs random access, i.e. the array_record format. TFDS logs through absl:
  # errors only meanwhile (its warning of a data folder not prepared is said below, once).
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
    prepared = builder.is_prepared()
  finally:
    logging.set_verbosity(verbosity)
  if not prepared:
    _prepare(builder, download)
  sources = builder.as_data_source(split=[train_split, "test"])
  class_names = tuple(builder.info.features["label"].names)
  return dataset, class_names, _read_source(sources[0]), _read_source(sources[1])


def _prepare(builder, download: bool) -> None:
  """Downloads and prepares ``builder``'s data after checking that this can work."""
  name, where = builder.name, builder.data_dir
  folder = f"--config.image_folder=PATH (a folder with {LAYOUT}; docs/data.md)"
  elsewhere = (
    f"point --config.data_dir at a folder holding a prepared {name} (array_record; prepared "
    f"by the same command on a machine with internet, then copied), or pass {folder}"
  )
  if not download:
    raise FileNotFoundError(
      f"TFDS {name} is not prepared: looked for it in {where}. To provide it, either let the "
      f"program download it (--config.download=True, the default) on a machine with internet "
      f'and TensorFlow (pip install "gradamp_jax[prepare]"), or {elsewhere}.'
    )
  if not _tensorflow_available():
    raise ImportError(
      f"TFDS {name} is not prepared (looked in {where}) and preparing it needs TensorFlow, "
      f'which is not installed: pip install "gradamp_jax[prepare]". Or pass {folder}.'
    )
  # For both CIFAR builders the archive is served from the homepage's host.
  host = urllib.parse.urlparse(builder.info.homepage).hostname
  offline = f"run the same command again once this machine reaches {host}, or {elsewhere}"
  _check_reachable(
    host, 443, _CONNECT_TIMEOUT_S, purpose=f"to download {name} into {where}; {offline}"
  )
  builder.download_and_prepare()


def _tensorflow_available() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _check_reachable(host: str, port: int, timeout: float, *, purpose: str) -> None:
  """Raises ConnectionError unless host:port connects in ``timeout`` (in a thread: DNS may hang)."""
  outcome: list[BaseException | None] = []

  def connect():
    try:
      socket.create_connection((host, port), timeout=timeout).close()
      outcome.append(None)
    except OSError as error:
      outcome.append(error)

  thread = threading.Thread(target=connect, name="gradamp_jax-connect-check", daemon=True)
  thread.start()
  thread.join(timeout + 0.5)
  if not outcome or outcome[0] is not None:
    reason = outcome[0] if outcome else f"no answer within {timeout:.0f} s"
    raise ConnectionError(f"Cannot reach {host}:{port} ({reason}), needed {purpose}.")


def _read_source(source) -> Split:
  """Reads every record of a TFDS data source into numpy, several threads at a time."""
  example = operator.itemgetter("image", "label")
  return read_split(len(source), source[0]["image"].shape, lambda i: example(source[i]))
