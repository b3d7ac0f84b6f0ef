"""CIFAR input pipeline: whole splits read once into numpy, then held on the device as uint8.

CIFAR is small (the 50,000 training images are 150 MB as uint8), so each split is read once
into numpy and copied once to every device (:func:`to_device`). Each epoch's shuffle,
random crops (zero padding 4) and horizontal flips are drawn on the device from
``fold_in(key(seed), epoch)`` (:func:`epoch_plan`), so an epoch is a pure function of
(seed, epoch), and each batch is gathered, augmented and normalised inside the jitted
training step (:func:`train_batch`): nothing crosses from the host during training.
Evaluation splits sit on the device in padded batches (:func:`to_device_batches`).
TensorFlow is never imported here (TFDS reads its prepared array_record files without it),
so the pipeline cannot reserve accelerator memory.

Two sources:

* TFDS ``cifar10`` / ``cifar100`` (fine labels), prepared once with TensorFlow installed
  (``pip install "gradamp_jax[prepare]"``) on a machine with internet;
* a local image folder ``<root>/{train,test}/<class>/*.{jpg,jpeg,png}`` (the layout
  ``tfds.ImageFolder`` reads), decoded with PIL; class ids follow the sorted class names.

Example::

  data = input_pipeline.load("cifar10")
  train = input_pipeline.to_device(data.train)
  plan = input_pipeline.epoch_plan(0, 1, num_examples=len(data.train), batch_size=128)
  batch = input_pipeline.train_batch(train, plan, 0, data.mean, data.std)
  # batch["image"]: float32 (128, 32, 32, 3), batch["label"]: int32 (128,)
"""

import concurrent.futures
import dataclasses
import importlib.util
import os
import re
import socket
import threading
import urllib.parse
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

DATASETS = ("cifar10", "cifar100")

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}

CIFAR10_CLASS_NAMES = (
  "airplane",
  "automobile",
  "bird",
  "cat",
  "deer",
  "dog",
  "frog",
  "horse",
  "ship",
  "truck",
)

CROP_PADDING = 4
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

_FOLDER_LAYOUT = "<image_folder>/train/<class>/*.jpg|png and <image_folder>/test/<class>/*.jpg|png"
# Reading and decoding small images is mostly Python work under the GIL: a few threads overlap
# file and decoder I/O, many threads only contend (16 threads take twice as long as 2).
_NUM_READ_THREADS = min(4, os.cpu_count() or 1)
_CONNECT_TIMEOUT_S = 5.0


@dataclasses.dataclass(frozen=True, eq=False)
class Split:
  """One split in memory: ``images`` (N, H, W, 3) uint8 and ``labels`` (N,) int32."""

  images: np.ndarray
  labels: np.ndarray

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
      raise ValueError(
        f"images must be uint8 of shape (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
      )
    if self.labels.dtype != np.int32 or self.labels.shape != self.images.shape[:1]:
      raise ValueError(
        f"labels must be int32 of shape ({len(self.images)},), "
        f"got {self.labels.dtype} {self.labels.shape}"
      )

  def __len__(self) -> int:
    return len(self.labels)


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A loaded dataset; ``mean`` and ``std`` are per-channel, in [0, 1] pixel units."""

  name: str
  num_classes: int
  class_names: tuple[str, ...]
  train: Split
  test: Split
  validation: Split | None
  mean: tuple[float, float, float]
  std: tuple[float, float, float]


# --------------------------------------------------------------------------------------------
# Loading


def load(
  dataset: str = "cifar10",
  *,
  data_dir: str | None = None,
  image_folder: str | None = None,
  train_split: str = "train",
  validation_fraction: float = 0.0,
  seed: int = 0,
  download: bool = True,
) -> Dataset:
  """Reads a dataset into memory.

  Args:
    dataset: ``"cifar10"`` or ``"cifar100"`` (fine labels), read with TFDS; not used when
      ``image_folder`` is given.
    data_dir: TFDS data directory (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    image_folder: read ``<image_folder>/{train,test}/<class>/*.{jpg,jpeg,png}`` instead of
      TFDS. Class ids follow the sorted class folder names. ``Dataset.name`` is the folder's
      base name.
    train_split: the training split. For TFDS any split string passes through (e.g.
      ``"train[:20%]"``). For an image folder it is ``train``, ``train[:N]``, ``train[:P%]``,
      ``train[A:B]`` (bounds may be percentages); the training files are ordered round-robin
      over the sorted classes, each class in sorted file-name order, and the slice is taken
      from that order, so a prefix keeps the classes balanced.
    validation_fraction: fraction in [0, 1) of the training split held out as validation:
      the last ``round(fraction * N)`` examples of a permutation drawn with ``seed``. Both
      parts keep their original order.
    seed: seed of the validation hold-out.
    download: for TFDS, download and prepare the dataset if ``data_dir`` does not hold it
      (needs TensorFlow and internet, checked first).

  Returns:
    The ``Dataset``. Its ``mean``/``std`` are the published CIFAR constants for TFDS data and
    for an image folder with exactly the CIFAR-10 class names, otherwise the statistics of
    the (post hold-out) training images.

  Raises:
    ValueError: unknown ``dataset``, bad ``train_split`` or ``validation_fraction``, or an
      image folder whose train/ and test/ classes differ.
    FileNotFoundError: missing image folder or train/ / test/ inside it; TFDS data not
      prepared and ``download=False``.
    ImportError: TFDS data not prepared and TensorFlow (needed to prepare it) not installed.
    ConnectionError: TFDS data not prepared and the download host unreachable.
  """
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
  if image_folder is not None:
    name, class_names, train, test = _read_image_folder(image_folder, train_split)
    stats = _STATS["cifar10"] if class_names == CIFAR10_CLASS_NAMES else None
  else:
    name, class_names, train, test = _read_tfds(dataset, data_dir, train_split, download)
    stats = _STATS[dataset]
  train, validation = _hold_out(train, validation_fraction, seed)
  mean, std = stats if stats is not None else channel_stats(train.images)
  return Dataset(
    name=name,
    num_classes=len(class_names),
    class_names=class_names,
    train=train,
    test=test,
    validation=validation,
    mean=mean,
    std=std,
  )


def channel_stats(
  images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of uint8 ``images``, in [0, 1] pixel units."""
  total = np.zeros(3)
  total_sq = np.zeros(3)
  for start in range(0, len(images), chunk):
    x = images[start : start + chunk].reshape(-1, 3).astype(np.float64) / 255.0
    total += x.sum(axis=0)
    total_sq += np.square(x).sum(axis=0)
  count = images.size // 3
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def _hold_out(train: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
  """Splits off the last ``round(fraction * N)`` examples of a seeded permutation."""
  if fraction == 0.0:
    return train, None
  n = len(train)
  num_validation = round(fraction * n)
  if not 0 < num_validation < n:
    raise ValueError(
      f"validation_fraction {fraction} of {n} training examples leaves "
      f"{num_validation} validation and {n - num_validation} training examples; "
      "both must be > 0"
    )
  permutation = np.random.default_rng(seed).permutation(n)
  keep = np.sort(permutation[: n - num_validation])
  held_out = np.sort(permutation[n - num_validation :])
  return _take(train, keep), _take(train, held_out)


def _take(split: Split, indices: np.ndarray) -> Split:
  return Split(images=split.images[indices], labels=split.labels[indices])


# TFDS ---------------------------------------------------------------------------------------


def _read_tfds(dataset: str, data_dir: str | None, train_split: str, download: bool):
  """Returns (name, class_names, train, test) read from TFDS array_record files."""
  if dataset not in DATASETS:
    raise ValueError(
      f"dataset must be one of {', '.join(DATASETS)} (or pass image_folder=), got {dataset!r}"
    )
  # tfds.data_source needs random access, i.e. the array_record format.
  builder = tfds.builder(dataset, data_dir=data_dir, file_format="array_record")
  if not builder.is_prepared():
    _prepare(builder, download)
  sources = builder.as_data_source(split=[train_split, "test"])
  class_names = tuple(builder.info.features["label"].names)
  return dataset, class_names, _read_source(sources[0]), _read_source(sources[1])


def _prepare(builder, download: bool) -> None:
  """Downloads and prepares ``builder``'s data after checking that this can work."""
  name, where = builder.name, builder.data_dir
  how = (
    f"either run once with download=True on a machine with internet and TensorFlow "
    f'(pip install "gradamp_jax[prepare]"), or point data_dir at a folder holding a prepared '
    f"{name} (array_record), or pass image_folder= (a folder with {_FOLDER_LAYOUT})"
  )
  if not download:
    raise FileNotFoundError(
      f"TFDS {name} is not prepared: looked for it in {where}. To provide it, {how}."
    )
  if not _tensorflow_available():
    raise ImportError(
      f"TFDS {name} is not prepared (looked in {where}) and preparing it needs TensorFlow, "
      f'which is not installed: pip install "gradamp_jax[prepare]". Or pass image_folder= '
      f"(a folder with {_FOLDER_LAYOUT})."
    )
  # For both CIFAR builders the archive is served from the homepage's host.
  host = urllib.parse.urlparse(builder.info.homepage).hostname
  _check_reachable(host, 443, _CONNECT_TIMEOUT_S, purpose=f"to download {name} into {where}; {how}")
  builder.download_and_prepare()


def _tensorflow_available() -> bool:
  return importlib.util.find_spec("tensorflow") is not None


def _check_reachable(host: str, port: int, timeout: float, *, purpose: str) -> None:
  """Raises ConnectionError unless a TCP connection to host:port opens within ``timeout``.

  The connection runs in a daemon thread so that a hanging DNS lookup cannot block either.
  """
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
  n = len(source)
  first = source[0]
  images = np.empty((n, *first["image"].shape), np.uint8)
  labels = np.empty(n, np.int32)

  def read(indices: range):
    for i in indices:
      example = source[i]
      images[i] = example["image"]
      labels[i] = example["label"]

  _run_chunked(read, n)
  return Split(images=images, labels=labels)


def _run_chunked(fn, n: int, chunk: int = 512) -> None:
  """Calls ``fn(range)`` on consecutive chunks of ``range(n)`` in a thread pool."""
  chunks = [range(start, min(start + chunk, n)) for start in range(0, n, chunk)]
  with concurrent.futures.ThreadPoolExecutor(_NUM_READ_THREADS) as pool:
    for future in [pool.submit(fn, c) for c in chunks]:
      future.result()  # re-raises a worker's exception


# Image folder -------------------------------------------------------------------------------


def _read_image_folder(root: str, train_split: str):
  """Returns (name, class_names, train, test) decoded from an image folder."""
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image_folder {root} does not exist; expected {_FOLDER_LAYOUT}.")
  missing = [s for s in ("train", "test") if not os.path.isdir(os.path.join(root, s))]
  if missing:
    raise FileNotFoundError(
      f"image_folder {root} has no {' or '.join(s + '/' for s in missing)} subfolder; "
      f"expected {_FOLDER_LAYOUT}."
    )
  train_files = _class_files(os.path.join(root, "train"))
  test_files = _class_files(os.path.join(root, "test"))
  if set(train_files) != set(test_files):
    only_train = sorted(set(train_files) - set(test_files))
    only_test = sorted(set(test_files) - set(train_files))
    raise ValueError(
      f"image_folder {root}: every class needs a folder in both train/ and test/; "
      f"only in train/: {only_train}, only in test/: {only_test}."
    )
  class_names = tuple(sorted(train_files))
  train_paths, train_labels = _round_robin(train_files, class_names)
  start, stop = split_bounds(train_split, len(train_paths))
  train = _decode(train_paths[start:stop], train_labels[start:stop])
  test = _decode(*_round_robin(test_files, class_names))
  return os.path.basename(root), class_names, train, test


def _class_files(split_dir: str) -> dict[str, list[str]]:
  """Class name -> sorted image paths, for each subfolder of ``split_dir``."""
  classes = {}
  for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
    if not entry.is_dir():
      continue
    files = sorted(
      f.name for f in os.scandir(entry.path) if f.name.lower().endswith(IMAGE_SUFFIXES)
    )
    if not files:
      raise ValueError(
        f"class folder {entry.path} holds no {'/'.join(IMAGE_SUFFIXES)} images; "
        "remove it or add images."
      )
    classes[entry.name] = [os.path.join(entry.path, f) for f in files]
  if not classes:
    raise FileNotFoundError(f"{split_dir} has no class subfolders; expected {_FOLDER_LAYOUT}.")
  return classes


def _round_robin(
  files: dict[str, list[str]], class_names: Sequence[str]
) -> tuple[list[str], np.ndarray]:
  """Interleaves the classes' files: 1st of each class, then 2nd of each class, ..."""
  paths, labels = [], []
  for position in range(max(len(f) for f in files.values())):
    for label, name in enumerate(class_names):
      if position < len(files[name]):
        paths.append(files[name][position])
        labels.append(label)
  return paths, np.asarray(labels, np.int32)


_SPLIT_PATTERN = re.compile(r"train(?:\[(?P<start>\d+%?)?:(?P<stop>\d+%?)?\])?")


def split_bounds(spec: str, num_examples: int) -> tuple[int, int]:
  """Parses ``train``, ``train[:N]``, ``train[:P%]``, ``train[A:B]`` into [start, stop).

  Percentages round to the closest index, as in TFDS.

  Raises:
    ValueError: any other form, or bounds outside [0, num_examples] or selecting nothing.
  """
  match = _SPLIT_PATTERN.fullmatch(spec)
  if match is None:
    raise ValueError(
      f"train_split {spec!r} is not supported for an image folder; use train, train[:N], "
      f"train[:P%] or train[A:B] (A, B may be percentages)"
    )

  def bound(text: str | None, default: int) -> int:
    if text is None:
      return default
    if text.endswith("%"):
      percent = int(text[:-1])
      if percent > 100:
        raise ValueError(f"train_split {spec!r}: percentages must be <= 100")
      return round(percent * num_examples / 100)
    value = int(text)
    if value > num_examples:
      raise ValueError(
        f"train_split {spec!r}: index {value} exceeds the {num_examples} training images"
      )
    return value

  start, stop = bound(match["start"], 0), bound(match["stop"], num_examples)
  if start >= stop:
    raise ValueError(f"train_split {spec!r} selects no image of the {num_examples} training images")
  return start, stop


def _decode(paths: Sequence[str], labels: np.ndarray) -> Split:
  """Decodes images to RGB uint8 with PIL in a thread pool; all must have the same size."""
  first = _read_image(paths[0])
  images = np.empty((len(paths), *first.shape), np.uint8)

  def decode(indices: range):
    for i in indices:
      image = _read_image(paths[i])
      if image.shape != first.shape:
        raise ValueError(
          f"{paths[i]} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
          f"{first.shape[1]}x{first.shape[0]}; all images must have the same size"
        )
      images[i] = image

  _run_chunked(decode, len(paths))
  return Split(images=images, labels=labels)


def _read_image(path: str) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


# --------------------------------------------------------------------------------------------
# On the device


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Number of full batches in an epoch (the remainder is dropped)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  return num_examples // batch_size


class DeviceSplit(NamedTuple):
  """A training split on the device(s), replicated: ``images`` uint8 (N, H, W, 3), ``labels``
  int32 (N,). Batches are gathered from it inside the jitted step."""

  images: jax.Array
  labels: jax.Array


class EvalSplit(NamedTuple):
  """An evaluation split on the device(s) in batches, each sharded along the batch axis:
  ``images`` uint8 (num_batches, B, H, W, 3), ``labels`` int32 and ``mask`` float32
  (num_batches, B); the last batch is padded with zero images, label 0 and mask 0."""

  images: jax.Array
  labels: jax.Array
  mask: jax.Array


class EpochPlan(NamedTuple):
  """An epoch's randomness, (steps, B) per example: ``order`` (indices into the split),
  ``offsets`` (steps, B, 2) crop corners and ``flips``."""

  order: jax.Array
  offsets: jax.Array
  flips: jax.Array


def place(array, sharding: jax.sharding.Sharding) -> jax.Array:
  """``array`` (which every process holds whole) as a ``jax.Array`` with ``sharding``: each
  process places the parts its devices need. Unlike ``jax.device_put``, the processes'
  copies are not compared (a NaN-filled array would never compare equal)."""
  array = np.asarray(array)
  return jax.make_array_from_callback(array.shape, sharding, lambda index: array[index])


def _replicated(mesh: Mesh | None) -> jax.sharding.Sharding:
  if mesh is None:
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])
  return NamedSharding(mesh, PartitionSpec())


def to_device(split: Split, mesh: Mesh | None = None) -> DeviceSplit:
  """Copies ``split`` as uint8 to every device of ``mesh`` (one device without a mesh)."""
  sharding = _replicated(mesh)
  return DeviceSplit(place(split.images, sharding), place(split.labels, sharding))


def to_device_batches(split: Split, batch_size: int, mesh: Mesh | None = None) -> EvalSplit:
  """Copies every example of ``split`` exactly once to the device(s), in order, as
  ``batch_size`` batches sharded over ``mesh``'s ``data`` axis (see :class:`EvalSplit`)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  n = len(split)
  num_batches = -(-n // batch_size)
  pad = num_batches * batch_size - n
  images = np.concatenate([split.images, np.zeros((pad, *split.images.shape[1:]), np.uint8)])
  labels = np.concatenate([split.labels, np.zeros(pad, np.int32)])
  mask = np.r_[np.ones(n, np.float32), np.zeros(pad, np.float32)]
  batched = lambda x: x.reshape(num_batches, batch_size, *x.shape[1:])
  if mesh is None:
    sharding = _replicated(None)
  elif batch_size % mesh.shape["data"]:
    raise ValueError(f"batch_size {batch_size} does not split evenly over the "
                     f"{mesh.shape['data']} devices of the mesh")
  else:
    sharding = NamedSharding(mesh, PartitionSpec(None, "data"))
  return EvalSplit(*(place(batched(x), sharding) for x in (images, labels, mask)))


def epoch_plan(seed, epoch, *, num_examples: int, batch_size: int) -> EpochPlan:
  """The shuffle, crop corners and flips of an epoch: a pure function of (seed, epoch).

  Drawn with ``jax.random`` from ``fold_in(key(seed), epoch)``: a permutation of the
  examples (the last incomplete batch dropped), crop corners uniform in
  [0, 2 * CROP_PADDING] and flips with probability 1/2. Jit-able (``seed`` and ``epoch``
  may be traced).
  """
  steps = steps_per_epoch(num_examples, batch_size)
  if steps == 0:
    raise ValueError(
      f"batch_size {batch_size} exceeds the {num_examples} examples; an epoch would be empty"
    )
  key = jax.random.fold_in(jax.random.key(seed), epoch)
  order_key, offset_key, flip_key = jax.random.split(key, 3)
  order = jax.random.permutation(order_key, num_examples)[: steps * batch_size]
  offsets = jax.random.randint(offset_key, (steps, batch_size, 2), 0, 2 * CROP_PADDING + 1)
  flips = jax.random.bernoulli(flip_key, 0.5, (steps, batch_size))
  return EpochPlan(order.reshape(steps, batch_size).astype(jnp.int32), offsets, flips)


def random_crop_flip(images: jax.Array, offsets: jax.Array, flips: jax.Array) -> jax.Array:
  """Crops each image out of its zero-padded copy and mirrors the selected ones.

  Args:
    images: (B, H, W, C) array.
    offsets: (B, 2) ints in [0, 2 * CROP_PADDING]: top-left corner (row, column) of the
      crop within the image padded by ``CROP_PADDING`` zeros on each side.
    flips: (B,) bools: mirror horizontally (after cropping).

  Returns:
    (B, H, W, C) array of the same dtype.
  """
  b, h, w, _ = images.shape
  p = CROP_PADDING
  padded = jnp.pad(images, ((0, 0), (p, p), (p, p), (0, 0)))
  rows = offsets[:, 0, None] + jnp.arange(h)
  cols = offsets[:, 1, None] + jnp.arange(w)
  cols = jnp.where(flips[:, None], cols[:, ::-1], cols)
  return padded[jnp.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]


def normalize(images: jax.Array, mean: Sequence[float], std: Sequence[float]) -> jax.Array:
  """uint8 images -> float32 ``(x / 255 - mean) / std`` (per channel, [0, 1] pixel units)."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  if mean.shape != (3,) or std.shape != (3,) or np.any(std <= 0):
    raise ValueError(
      f"mean and std must be 3 per-channel values with std > 0, got mean={mean}, std={std}"
    )
  return images.astype(jnp.float32) * (1.0 / (255.0 * std)) - mean / std


def train_batch(data: DeviceSplit, plan: EpochPlan, step, mean, std) -> dict:
  """Batch ``step`` of the epoch ``plan`` describes: gathered, cropped, flipped and
  normalised on the device (jit-able; ``step`` may be traced)."""
  indices = plan.order[step]
  images = random_crop_flip(data.images[indices], plan.offsets[step], plan.flips[step])
  return {"image": normalize(images, mean, std), "label": data.labels[indices]}
