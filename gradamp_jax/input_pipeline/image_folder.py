"""A local image folder ``<root>/{train,test}/<class>/*.{jpg,jpeg,png}`` (as
``tfds.ImageFolder`` reads it), decoded with PIL; class ids follow the sorted class names."""

import os
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from gradamp_jax.input_pipeline.split import Split, read_split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
LAYOUT = "<image_folder>/train/<class>/*.jpg|png and <image_folder>/test/<class>/*.jpg|png"


def read(root: str, train_split: str):
  """Returns (name, class_names, train, test) decoded from an image folder."""
  root = os.path.abspath(os.path.expanduser(root))
  if not os.path.isdir(root):
    raise FileNotFoundError(f"image_folder {root} does not exist; expected {LAYOUT}.")
  missing = [s for s in ("train", "test") if not os.path.isdir(os.path.join(root, s))]
  if missing:
    raise FileNotFoundError(
      f"image_folder {root} has no {' or '.join(s + '/' for s in missing)} subfolder; "
      f"expected {LAYOUT}."
    )
  train_files, test_files = (_class_files(os.path.join(root, s)) for s in ("train", "test"))
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
    raise FileNotFoundError(f"{split_dir} has no class subfolders; expected {LAYOUT}.")
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
  """Parses ``train``, ``train[:N]``, ``train[:P%]``, ``train[A:B]`` into [start, stop)
  (percentages round to the closest index, as in TFDS).

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

  def decode(i: int):
    image = _read_image(paths[i])
    if image.shape != first.shape:
      raise ValueError(
        f"{paths[i]} is {image.shape[1]}x{image.shape[0]} but {paths[0]} is "
        f"{first.shape[1]}x{first.shape[0]}; all images must have the same size"
      )
    return image, labels[i]

  return read_split(len(paths), first.shape, decode)


def _read_image(path: str) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))
