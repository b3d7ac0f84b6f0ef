"""The in-memory form of a dataset: splits as numpy arrays, and threaded reading."""

import concurrent.futures
import dataclasses
import os

import numpy as np

# Reading and decoding small images is mostly Python work under the GIL: a few threads overlap
# file and decoder I/O, many threads only contend (16 threads take twice as long as 2).
_NUM_READ_THREADS = min(4, os.cpu_count() or 1)


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


def read_split(n: int, shape: tuple, example, chunk: int = 512) -> Split:
  """The split of ``n`` examples whose images have ``shape``: ``example(i)`` is the ``i``-th
  ``(image, label)``, called in a thread pool on consecutive chunks of ``range(n)``."""
  images, labels = np.empty((n, *shape), np.uint8), np.empty(n, np.int32)

  def read(indices: range):
    for i in indices:
      images[i], labels[i] = example(i)

  chunks = [range(start, min(start + chunk, n)) for start in range(0, n, chunk)]
  with concurrent.futures.ThreadPoolExecutor(_NUM_READ_THREADS) as pool:
    for future in [pool.submit(read, c) for c in chunks]:
      future.result()  # re-raises a worker's exception
  return Split(images=images, labels=labels)
