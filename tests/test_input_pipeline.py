"""Tests for gradamp_jax.input_pipeline on mocked TFDS data and small image folders."""

import os
import socket
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from PIL import Image

from gradamp_jax import input_pipeline as ip
from gradamp_jax.input_pipeline import tfds_source

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


def _split(n, seed=0, size=32):
  """Random images whose label is their index, so outputs can be traced back."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
  return ip.Split(images=images, labels=np.arange(n, dtype=np.int32))


def _normalize(images):
  return (images.astype(np.float64) / 255.0 - np.asarray(MEAN)) / np.asarray(STD)


def _is_crop_of_padded(output, original):
  """Whether ``output`` (normalised) is a crop of the zero-padded ``original``, maybe mirrored."""
  h, w, _ = original.shape
  padded = _normalize(np.pad(original, ((4, 4), (4, 4), (0, 0))))
  for dy in range(9):
    for dx in range(9):
      crop = padded[dy : dy + h, dx : dx + w]
      if np.allclose(output, crop, atol=1e-4) or np.allclose(output, crop[:, ::-1], atol=1e-4):
        return True
  return False


# --------------------------------------------------------------------------------------------
# TFDS


@pytest.fixture
def mock_tfds(monkeypatch):
  """TFDS reads random examples; mock_data does not cover is_prepared (a look at the disk)."""
  monkeypatch.setattr(tfds.core.DatasetBuilder, "is_prepared", lambda self: True)
  with tfds.testing.mock_data(num_examples=40):
    yield


@pytest.mark.parametrize(
  "name, num_classes, mean, std",
  [
    ("cifar10", 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    ("cifar100", 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
  ],
)
def test_tfds_load(mock_tfds, name, num_classes, mean, std):
  data = ip.load(name)
  assert (data.name, data.num_classes, len(data.class_names)) == (name, num_classes, num_classes)
  assert (data.mean, data.std) == (mean, std)
  assert data.validation is None
  for split in (data.train, data.test):
    assert split.images.shape == (40, 32, 32, 3) and split.images.dtype == np.uint8
    assert split.labels.shape == (40,) and split.labels.dtype == np.int32
    assert 0 <= split.labels.min() and split.labels.max() < num_classes
  assert len(np.unique(data.train.images.reshape(40, -1), axis=0)) == 40


def test_tfds_validation_hold_out(mock_tfds):
  full = ip.load("cifar10").train
  data = ip.load("cifar10", validation_fraction=0.25, seed=3)
  assert (len(data.train), len(data.validation)) == (30, 10)
  # Trace rows back to the full split: disjoint, complete, each part in original order.
  rows = {full.images[i].tobytes(): i for i in range(len(full))}
  train_ids = [rows[x.tobytes()] for x in data.train.images]
  val_ids = [rows[x.tobytes()] for x in data.validation.images]
  assert sorted(train_ids + val_ids) == list(range(40))
  assert train_ids == sorted(train_ids) and val_ids == sorted(val_ids)
  np.testing.assert_array_equal(data.validation.labels, full.labels[val_ids])
  again = ip.load("cifar10", validation_fraction=0.25, seed=3).validation
  np.testing.assert_array_equal(again.images, data.validation.images)
  other = ip.load("cifar10", validation_fraction=0.25, seed=4).validation
  assert not np.array_equal(other.images, data.validation.images)


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 0.001])
def test_bad_validation_fraction(mock_tfds, fraction):
  with pytest.raises(ValueError, match="validation_fraction"):
    ip.load("cifar10", validation_fraction=fraction)


def test_unknown_dataset_lists_allowed():
  with pytest.raises(ValueError, match=r"cifar10, cifar100.*'mnist'"):
    ip.load("mnist")


def test_tfds_not_prepared_without_download(tmp_path):
  start = time.monotonic()
  with pytest.raises(FileNotFoundError) as error:
    ip.load("cifar10", data_dir=str(tmp_path), download=False)
  assert time.monotonic() - start < 5
  message = str(error.value)
  assert str(tmp_path / "cifar10") in message
  assert "(--config.download=True, the default)" in message  # undoes --config.download=False
  assert "--config.data_dir" in message and "--config.image_folder=PATH" in message


@pytest.fixture
def no_network(monkeypatch):
  """Fails the test if anything tries to connect or download."""

  def refuse(*args, **kwargs):
    raise AssertionError("the test tried to open a connection or download")

  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)


def test_tfds_not_prepared_without_tensorflow(tmp_path, monkeypatch, no_network):
  monkeypatch.setattr(tfds_source, "_tensorflow_available", lambda: False)
  with pytest.raises(ImportError, match=r'pip install "gradamp_jax\[prepare\]"') as error:
    ip.load("cifar100", data_dir=str(tmp_path), download=True)
  assert str(tmp_path / "cifar100") in str(error.value)
  assert "--config.image_folder=PATH" in str(error.value)


def test_tfds_warnings_of_a_folder_not_prepared_are_kept_out_of_the_way(tmp_path, caplog):
  from absl import logging

  (tmp_path / "cifar10" / "3.0.2").mkdir(parents=True)  # a variant folder without its files
  before = logging.get_verbosity()
  caplog.set_level("INFO")
  with pytest.raises(FileNotFoundError, match="--config.image_folder=PATH"):
    ip.load("cifar10", data_dir=str(tmp_path), download=False)
  assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
  assert logging.get_verbosity() == before


def test_tfds_not_prepared_host_unreachable(tmp_path, monkeypatch):
  monkeypatch.setattr(tfds_source, "_tensorflow_available", lambda: True)
  attempts = []

  def unreachable(address, timeout):
    attempts.append(address)
    raise OSError("Network is unreachable")

  monkeypatch.setattr(socket, "create_connection", unreachable)
  with pytest.raises(
    ConnectionError, match=r"www\.cs\.toronto\.edu:443.*Network is unreachable"
  ) as error:
    ip.load("cifar10", data_dir=str(tmp_path), download=True)
  assert attempts == [("www.cs.toronto.edu", 443)]
  # Downloading is what failed: the ways out are connectivity, prepared data or an image folder.
  message = str(error.value)
  assert "--config.download" not in message
  assert "once this machine reaches www.cs.toronto.edu" in message
  assert "--config.data_dir" in message and "--config.image_folder=PATH" in message


# --------------------------------------------------------------------------------------------
# Image folders


def _write_folder(root, layout, size=32, seed=0):
  """Writes PNGs for ``layout[split][class] = count``; returns their pixels by path."""
  rng = np.random.default_rng(seed)
  pixels = {}
  for split, classes in layout.items():
    for name, count in classes.items():
      os.makedirs(root / split / name)
      for i in range(count):
        image = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        path = root / split / name / f"{i:03d}.png"
        Image.fromarray(image).save(path)
        pixels[str(path)] = image
  return pixels


# Classes are written out of order; "bee" has more training images than the others.
LAYOUT = {
  "train": {"cat": 3, "ant": 3, "bee": 4},
  "test": {"bee": 1, "ant": 2, "cat": 1},
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("pets")
  pixels = _write_folder(root, LAYOUT)
  (root / "README.md").write_text("not a split")
  (root / "train" / "ant" / "notes.txt").write_text("not an image")
  return root, pixels


def _expected_train_order(root):
  """Round-robin over sorted classes, each class in file-name order."""
  order = []
  for i in range(4):
    for label, name in enumerate(["ant", "bee", "cat"]):
      if i < LAYOUT["train"][name]:
        order.append((str(root / "train" / name / f"{i:03d}.png"), label))
  return order


def test_image_folder_load(folder):
  root, pixels = folder
  data = ip.load(image_folder=str(root))
  assert (data.name, data.class_names, data.num_classes) == (root.name, ("ant", "bee", "cat"), 3)
  order = _expected_train_order(root)
  np.testing.assert_array_equal(data.train.labels, [label for _, label in order])
  np.testing.assert_array_equal(data.train.images, np.stack([pixels[path] for path, _ in order]))
  np.testing.assert_array_equal(np.bincount(data.test.labels), [2, 1, 1])
  # Not the CIFAR-10 classes, so the statistics come from the training images.
  x = data.train.images.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(data.mean, x.mean(axis=0), rtol=1e-9)
  np.testing.assert_allclose(data.std, x.std(axis=0), rtol=1e-9)


@pytest.mark.parametrize(
  "spec, expected",
  [
    ("train", slice(0, 10)),
    ("train[:4]", slice(0, 4)),
    ("train[:50%]", slice(0, 5)),
    ("train[2:5]", slice(2, 5)),
    ("train[30%:]", slice(3, 10)),
    ("train[10%:70%]", slice(1, 7)),
  ],
)
def test_image_folder_train_split(folder, spec, expected):
  root, pixels = folder
  data = ip.load(image_folder=str(root), train_split=spec)
  order = _expected_train_order(root)[expected]
  np.testing.assert_array_equal(data.train.labels, [label for _, label in order])
  np.testing.assert_array_equal(data.train.images, np.stack([pixels[path] for path, _ in order]))
  assert len(data.test) == 4


@pytest.mark.parametrize(
  "spec", ["test", "train[::2]", "train[:200%]", "train[5:2]", "train[:11]", "train[-2:]"]
)
def test_image_folder_bad_train_split(folder, spec):
  with pytest.raises(ValueError, match="train_split"):
    ip.load(image_folder=str(folder[0]), train_split=spec)


def test_split_bounds_rounds_percentages_to_closest():
  assert ip.split_bounds("train[:20%]", 50_000) == (0, 10_000)
  assert ip.split_bounds("train[:33%]", 10) == (0, 3)
  assert ip.split_bounds("train[:35%]", 10) == (0, 4)  # round(3.5) == 4
  assert ip.split_bounds("train[67%:]", 10) == (7, 10)


def test_image_folder_validation(folder):
  data = ip.load(image_folder=str(folder[0]), validation_fraction=0.3, seed=1)
  assert (len(data.train), len(data.validation)) == (7, 3)
  x = data.train.images.reshape(-1, 3) / 255.0
  np.testing.assert_allclose(data.mean, x.mean(axis=0), rtol=1e-9)


def test_image_folder_with_cifar10_classes_uses_cifar10_stats(tmp_path):
  names = ip.CIFAR10_CLASS_NAMES
  _write_folder(
    tmp_path, {"train": dict.fromkeys(names, 1), "test": dict.fromkeys(names, 1)}, size=4
  )
  data = ip.load(image_folder=str(tmp_path))
  assert data.class_names == names and data.train.images.shape == (10, 4, 4, 3)
  assert (data.mean, data.std) == (MEAN, STD)


def test_image_folder_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"does not exist.*train/<class>"):
    ip.load(image_folder=str(tmp_path / "nowhere"))


def test_image_folder_without_test_split(tmp_path):
  _write_folder(tmp_path, {"train": {"a": 1}}, size=4)
  with pytest.raises(FileNotFoundError, match=r"no test/ subfolder.*test/<class>"):
    ip.load(image_folder=str(tmp_path))


def test_image_folder_class_in_one_split_only(tmp_path):
  _write_folder(tmp_path, {"train": {"a": 1, "b": 1}, "test": {"a": 1, "c": 1}}, size=4)
  with pytest.raises(ValueError, match=r"only in train/: \['b'\], only in test/: \['c'\]"):
    ip.load(image_folder=str(tmp_path))


def test_image_folder_mixed_sizes(tmp_path):
  _write_folder(tmp_path, {"train": {"a": 1}, "test": {"a": 1}}, size=4)
  Image.fromarray(np.zeros((5, 4, 3), np.uint8)).save(tmp_path / "train" / "a" / "big.png")
  with pytest.raises(ValueError, match="same size"):
    ip.load(image_folder=str(tmp_path))


# --------------------------------------------------------------------------------------------
# Batches


def test_split_validates_arrays():
  with pytest.raises(ValueError, match="images must be uint8"):
    ip.Split(images=np.zeros((2, 4, 4, 3), np.float32), labels=np.zeros(2, np.int32))
  with pytest.raises(ValueError, match="labels must be int32"):
    ip.Split(images=np.zeros((2, 4, 4, 3), np.uint8), labels=np.zeros(3, np.int32))


def test_steps_per_epoch():
  assert ip.steps_per_epoch(50_000, 128) == 390
  assert ip.steps_per_epoch(10, 5) == 2
  assert ip.steps_per_epoch(4, 5) == 0
  with pytest.raises(ValueError, match="batch_size"):
    ip.steps_per_epoch(10, 0)


def test_random_crop_flip_matches_slicing():
  images = _split(6, size=8).images
  offsets = np.array([[0, 0], [8, 8], [4, 4], [1, 7], [3, 0], [8, 2]])
  flips = np.array([False, True, False, True, True, False])
  out = np.asarray(jax.jit(ip.random_crop_flip)(images, offsets, flips))
  assert out.dtype == np.uint8
  for image, (dy, dx), flip, result in zip(images, offsets, flips, out, strict=True):
    expected = np.pad(image, ((4, 4), (4, 4), (0, 0)))[dy : dy + 8, dx : dx + 8]
    np.testing.assert_array_equal(result, expected[:, ::-1] if flip else expected)


def _epoch(split, batch_size, seed, epoch, mesh=None):
  """Every batch of an epoch, gathered and augmented on the device, as numpy."""
  data = ip.to_device(split, mesh)
  plan = jax.jit(ip.epoch_plan, static_argnames=("num_examples", "batch_size"))(
    seed, epoch, num_examples=len(split), batch_size=batch_size
  )
  batch = jax.jit(ip.train_batch, static_argnums=(3, 4))
  steps = ip.steps_per_epoch(len(split), batch_size)
  return [
    {k: np.asarray(v) for k, v in batch(data, plan, step, MEAN, STD).items()}
    for step in range(steps)
  ]


def test_train_batches_content():
  split = _split(50)
  batches = _epoch(split, batch_size=16, seed=0, epoch=1)
  assert len(batches) == 3
  labels = np.concatenate([b["label"] for b in batches])
  assert len(np.unique(labels)) == 48  # a permutation, remainder dropped
  for batch in batches:
    assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
    for image, label in zip(batch["image"], batch["label"], strict=True):
      assert _is_crop_of_padded(image, split.images[label]), label
  # Augmentation is on: some crops are shifted or mirrored.
  unchanged = [
    np.allclose(img, _normalize(split.images[lab]), atol=1e-4)
    for b in batches
    for img, lab in zip(b["image"], b["label"], strict=True)
  ]
  assert sum(unchanged) < 10


def test_epoch_plan_statistics():
  plan = ip.epoch_plan(3, 2, num_examples=20_000, batch_size=100)
  order, offsets, flips = (np.asarray(x) for x in plan)
  assert order.shape == (200, 100) and sorted(order.ravel()) == list(range(20_000))
  assert offsets.shape == (200, 100, 2) and offsets.min() == 0 and offsets.max() == 8
  counts = np.bincount(offsets.ravel(), minlength=9) / offsets.size
  np.testing.assert_allclose(counts, 1 / 9, atol=0.01)  # uniform corners
  assert abs(flips.mean() - 0.5) < 0.01
  with pytest.raises(ValueError, match="exceeds the 8 examples"):
    ip.epoch_plan(0, 1, num_examples=8, batch_size=16)


def test_train_batches_pure_function_of_seed_and_epoch():
  split = _split(40)
  first = _epoch(split, 8, seed=0, epoch=0)
  for a, b in zip(first, _epoch(split, 8, seed=0, epoch=0), strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["label"], b["label"])
  for other in (_epoch(split, 8, seed=0, epoch=1), _epoch(split, 8, seed=1, epoch=0)):
    assert not np.array_equal(first[0]["label"], other[0]["label"])


def test_eval_batches_cover_each_example_once():
  split = _split(50)
  batches = ip.to_device_batches(split, 16)
  images, labels, mask = (np.asarray(x) for x in batches)
  assert images.shape == (4, 16, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(mask.ravel(), np.r_[np.ones(50), np.zeros(14)])
  np.testing.assert_array_equal(labels.ravel()[:50], np.arange(50))
  np.testing.assert_array_equal(images.reshape(-1, 32, 32, 3)[:50], split.images)
  assert not images.reshape(-1, 32, 32, 3)[50:].any()
  normalized = np.asarray(ip.normalize_images(split.images, MEAN, STD))
  np.testing.assert_allclose(normalized, _normalize(split.images), atol=1e-5)


def test_sharded_batches_equal_one_device():
  assert jax.device_count() == 2, "tests/conftest.py sets two host devices"
  mesh = Mesh(np.array(jax.devices()), ("data",))
  split = _split(40)
  data = ip.to_device(split, mesh)
  assert data.images.sharding.is_fully_replicated and len(data.images.addressable_shards) == 2
  evals = ip.to_device_batches(split, 16, mesh)
  assert evals.images.sharding == NamedSharding(mesh, P(None, "data"))
  assert [s.data.shape for s in evals.labels.addressable_shards] == [(3, 8)] * 2
  assert float(np.asarray(evals.mask).sum()) == 40
  one = _epoch(split, 8, seed=0, epoch=0)
  two = _epoch(split, 8, seed=0, epoch=0, mesh=mesh)
  for a, b in zip(one, two, strict=True):
    for key in ("image", "label"):
      np.testing.assert_array_equal(a[key], b[key])
  with pytest.raises(ValueError, match="batch_size 7 does not split evenly"):
    ip.to_device_batches(split, 7, mesh)


def test_bad_batch_arguments():
  split = _split(8)
  with pytest.raises(ValueError, match="batch_size must be >= 1"):
    ip.to_device_batches(split, 0)
  with pytest.raises(ValueError, match="mean and std"):
    ip.normalize_images(split.images, (0.5, 0.5), STD)


def test_an_image_folder_is_trained_on_without_tensorflow_datasets(tmp_path):
  """The training program and an image folder need no TFDS (a GPU image may lack it)."""
  import subprocess
  import sys

  _write_folder(tmp_path, {"train": {"ant": 2, "bee": 2}, "test": {"ant": 1, "bee": 1}})
  code = (
    "import sys; sys.modules['tensorflow_datasets'] = None\n"  # importing it would fail
    "from gradamp_jax import input_pipeline\n"
    "import gradamp_jax.training.train, gradamp_jax.main\n"
    f"d = input_pipeline.load(image_folder={str(tmp_path)!r})\n"
    "print(len(d.train.labels), len(d.test.labels))\n"
  )
  done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr[-2000:]
  assert done.stdout.split() == ["4", "2"]
