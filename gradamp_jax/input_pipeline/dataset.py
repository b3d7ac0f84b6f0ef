"""Loading a dataset into memory: the source (TFDS or an image folder), the validation
hold-out and the normalisation statistics."""

import numpy as np

from gradamp_jax.input_pipeline import image_folder as image_folder_lib
from gradamp_jax.input_pipeline import tfds_source
from gradamp_jax.input_pipeline.split import Dataset, Split

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
_STATS = {"cifar10": (CIFAR10_MEAN, CIFAR10_STD), "cifar100": (CIFAR100_MEAN, CIFAR100_STD)}

CIFAR10_CLASS_NAMES = tuple("airplane automobile bird cat deer dog frog horse ship truck".split())


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
    dataset: ``"cifar10"`` or ``"cifar100"`` (fine labels), read with TFDS.
    data_dir: TFDS data directory (default: ``$TFDS_DATA_DIR`` or ``~/tensorflow_datasets``).
    image_folder: read ``<image_folder>/{train,test}/<class>/*.{jpg,jpeg,png}`` instead of
      TFDS (class ids follow the sorted class names).
    train_split: the training split: for TFDS any split string; for an image folder
      ``train``, ``train[:N]``, ``train[:P%]`` or ``train[A:B]``, sliced from the files
      ordered round-robin over the classes (a prefix keeps them balanced).
    validation_fraction: fraction in [0, 1) of the training split held out as validation
      (:func:`hold_out_indices`).
    seed: seed of the validation hold-out.
    download: for TFDS, download and prepare the dataset if ``data_dir`` does not hold it.

  Returns:
    The ``Dataset``; ``mean``/``std`` are the CIFAR constants for TFDS data and an image
    folder of CIFAR-10's classes, else the training images' statistics.

  Raises:
    ValueError: a bad argument, or an image folder whose train/ and test/ classes differ.
    FileNotFoundError: a missing image folder (or its train/, test/); TFDS data not prepared
      and ``download=False``.
    ImportError, ConnectionError: TFDS data not prepared, and no TensorFlow or no internet.
  """
  (dataset,) = load_for_seeds(
    [seed],
    dataset,
    data_dir=data_dir,
    image_folder=image_folder,
    train_split=train_split,
    validation_fraction=validation_fraction,
    download=download,
  )[1]
  return dataset


def load_for_seeds(
  seeds,
  dataset: str = "cifar10",
  *,
  data_dir: str | None = None,
  image_folder: str | None = None,
  train_split: str = "train",
  validation_fraction: float = 0.0,
  download: bool = True,
) -> tuple[Split, list[Dataset], list[np.ndarray]]:
  """Reads a dataset once for runs that differ in seed; ``(pool, datasets, indices)``: the
  training split before the hold-out, each seed's :func:`load` and its positions in ``pool``."""
  if not 0.0 <= validation_fraction < 1.0:
    raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}")
  if image_folder is not None:
    name, class_names, pool, test = image_folder_lib.read(image_folder, train_split)
    stats = _STATS["cifar10"] if class_names == CIFAR10_CLASS_NAMES else None
  else:
    name, class_names, pool, test = tfds_source.read(dataset, data_dir, train_split, download)
    stats = _STATS[dataset]
  datasets, indices = [], []
  for seed in seeds:
    keep, held_out = hold_out_indices(len(pool), validation_fraction, seed)
    train = Split(pool.images[keep], pool.labels[keep])
    mean, std = stats if stats is not None else channel_stats(train.images)
    validation = None if held_out is None else Split(pool.images[held_out], pool.labels[held_out])
    datasets.append(
      Dataset(name, len(class_names), class_names, train, test, validation, mean, std)
    )
    indices.append(keep.astype(np.int32))
  return pool, datasets, indices


def channel_stats(
  images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
  """Per-channel mean and standard deviation of uint8 ``images``, in [0, 1] pixel units."""
  total, total_sq = np.zeros(3), np.zeros(3)
  for start in range(0, len(images), chunk):
    x = images[start : start + chunk].reshape(-1, 3).astype(np.float64) / 255.0
    total += x.sum(axis=0)
    total_sq += np.square(x).sum(axis=0)
  count = images.size // 3
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def hold_out_indices(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
  """The kept and held-out positions (each sorted) of ``n`` training examples: the last
  ``round(fraction * n)`` of a seeded permutation are held out (None for fraction 0)."""
  if fraction == 0.0:
    return np.arange(n), None
  num_validation = round(fraction * n)
  if not 0 < num_validation < n:
    raise ValueError(
      f"validation_fraction {fraction} of {n} training examples leaves {num_validation} "
      f"validation and {n - num_validation} training examples; both must be > 0"
    )
  permutation = np.random.default_rng(seed).permutation(n)
  return np.sort(permutation[: n - num_validation]), np.sort(permutation[n - num_validation :])


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Number of full batches in an epoch (the remainder is dropped)."""
  if batch_size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  return num_examples // batch_size
