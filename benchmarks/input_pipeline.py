"""Throughput of the input pipeline next to that of a resnet8 training step.

Measures, in one process and one after the other:

1. the pipeline alone: one epoch of ``input_pipeline.train_batches`` (shuffle, random crop,
   flip, normalisation, placement on the device), over the training images of
   ``--image_folder`` or, without it, 50,000 random uint8 images of CIFAR shape;
2. the training program's jit-compiled step (``train.make_train_step``) for the quickstart
   config — resnet8, G′ amplification, weight decay, SGD momentum — on one fixed batch;
3. the same step fed by the pipeline, as in training.

Each is repeated (``--repeats``, default 3); the script prints the median images/s with the
range, and the ratio of the pipeline's median to the step's. Usage::

  python benchmarks/input_pipeline.py --image_folder ~/data/cifar10-jpg
"""

import argparse
import itertools
import os
import sys
import time

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # noqa: E402
from gradamp_jax import input_pipeline, train  # noqa: E402


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument(
    "--image_folder", default=None, help="image folder to read; default: synthetic data"
  )
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--step_iterations", type=int, default=30, help="timed steps per repeat")
  parser.add_argument("--repeats", type=int, default=3, help="repetitions of each measurement")
  return parser.parse_args()


def training_split(image_folder: str | None) -> tuple[input_pipeline.Split, tuple, tuple]:
  """The training split and its normalisation constants."""
  if image_folder is None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50_000, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=50_000, dtype=np.int32)
    return (
      input_pipeline.Split(images, labels),
      input_pipeline.CIFAR10_MEAN,
      input_pipeline.CIFAR10_STD,
    )
  start = time.perf_counter()
  data = input_pipeline.load(image_folder=image_folder)
  seconds = time.perf_counter() - start
  print(f"load {image_folder}: {len(data.train) + len(data.test)} images in {seconds:.1f} s")
  return data.train, data.mean, data.std


def make_train_step(steps_per_epoch: int):
  """The training program's own jit-compiled step for the quickstart config (resnet8,
  G′ amplification, weight decay, SGD momentum) and its initial state."""
  config = quickstart.get_config()
  tx = train.create_optimizer(config, steps_per_epoch)
  graphdef, state = train.create_train_state(config, 10, tx)
  train_step = jax.jit(train.make_train_step(graphdef, tx))

  def step(state, batch):
    state, metrics = train_step(state, batch)
    return state, metrics["loss"]

  return step, state


def pipeline_rate(split, mean, std, batch_size, sharding) -> float:
  """Images/s over one full epoch of train_batches, consumer doing nothing."""
  start = time.perf_counter()
  count = 0
  for batch in input_pipeline.train_batches(
    split, batch_size=batch_size, seed=0, epoch=0, mean=mean, std=std, sharding=sharding
  ):
    count += batch["label"].shape[0]
  jax.block_until_ready(batch)
  return count / (time.perf_counter() - start)


def step_rate(step, state, batch, iterations: int) -> float:
  """Images/s of the training step on one fixed device batch (after compilation)."""
  state, loss = step(state, batch)
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for _ in range(iterations):
    state, loss = step(state, batch)
  jax.block_until_ready(loss)
  return iterations * batch["label"].shape[0] / (time.perf_counter() - start)


def fed_rate(step, state, split, mean, std, batch_size, sharding, num_steps: int) -> float:
  """Images/s of the training step consuming train_batches (step already compiled)."""
  batches = input_pipeline.train_batches(
    split, batch_size=batch_size, seed=0, epoch=1, mean=mean, std=std, sharding=sharding
  )
  state, loss = step(state, next(batches))
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for batch in itertools.islice(batches, num_steps):
    state, loss = step(state, batch)
  jax.block_until_ready(loss)
  return num_steps * batch_size / (time.perf_counter() - start)


def report(label: str, rates: list[float]) -> None:
  low, median, high = min(rates), np.median(rates), max(rates)
  print(f"{label:<44} {median:8.0f} images/s (median of {len(rates)}: {low:.0f}-{high:.0f})")


def main():
  args = parse_args()
  print(f"devices: {jax.devices()}")
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  split, mean, std = training_split(args.image_folder)
  batch_size, repeats = args.batch_size, args.repeats

  pipeline = [pipeline_rate(split, mean, std, batch_size, sharding) for _ in range(repeats)]
  report(f"pipeline alone (epochs of {len(split)} images):", pipeline)

  step, state = make_train_step(input_pipeline.steps_per_epoch(len(split), batch_size))
  fixed = next(
    input_pipeline.train_batches(
      split, batch_size=batch_size, seed=0, epoch=0, mean=mean, std=std, sharding=sharding
    )
  )
  training = [step_rate(step, state, fixed, args.step_iterations) for _ in range(repeats)]
  report(f"resnet8 train step alone (batch {batch_size}):", training)
  fed = [
    fed_rate(step, state, split, mean, std, batch_size, sharding, args.step_iterations)
    for _ in range(repeats)
  ]
  report("resnet8 train step fed by the pipeline:", fed)
  print(f"ratio pipeline / step (medians): {np.median(pipeline) / np.median(training):.0f}x")


if __name__ == "__main__":
  main()
