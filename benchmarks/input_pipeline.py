"""The on-device input pipeline and the steps per call, next to a bare training step.

Measures in one process, the measurements taking turns (``--repeats`` rounds):

1. the pipeline alone: one epoch of batches gathered from the uint8 training split on the
   device, cropped, flipped and normalised (``input_pipeline.train_batch``), in one call;
2. the training program's step (``steps_lib.make_train_step``, quickstart config: resnet8,
   G′ amplification, weight decay, SGD momentum) on one fixed float32 batch already on the
   device: no input pipeline at all;
3. the training program's chunk (``steps_lib.make_train_chunk``) one step per call: the batch
   gathered and augmented inside the step (what ``steps_per_dispatch=1`` runs);
4. the same chunk with ``--steps_per_dispatch`` steps per call, in a loop on the device.

Data: the training images of ``--image_folder`` or, without it, 50,000 random uint8 images
of CIFAR's shape. Prints the median images/s with the range and the ratios that decide
``steps_lib.steps_per_dispatch``'s automatic choice. Usage::

  python benchmarks/input_pipeline.py --image_folder ~/data/cifar10-jpg
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Trainer, synthetic_split  # noqa: E402
from configs import quickstart  # noqa: E402
from gradamp_jax import input_pipeline  # noqa: E402
from gradamp_jax.training import optimizer  # noqa: E402
from gradamp_jax.training import steps as steps_lib  # noqa: E402

MEAN, STD = input_pipeline.CIFAR10_MEAN, input_pipeline.CIFAR10_STD


def parse_args() -> argparse.Namespace:
  parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  parser.add_argument("--image_folder", default=None, help="image folder; default: synthetic")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=20, help="timed steps per turn")
  parser.add_argument("--steps_per_dispatch", type=int, default=10, help="steps per call in 4")
  parser.add_argument("--repeats", type=int, default=3, help="turns of each measurement")
  return parser.parse_args()


def training_split(image_folder: str | None) -> input_pipeline.Split:
  if image_folder is None:
    return synthetic_split(50_000)
  start = time.perf_counter()
  data = input_pipeline.load(image_folder=image_folder)
  print(
    f"load {image_folder}: {len(data.train) + len(data.test)} images in "
    f"{time.perf_counter() - start:.1f} s"
  )
  return data.train


def pipeline_epoch(batch_size: int):
  """One epoch of augmented batches in one call; returns their sum (nothing is skipped)."""

  def epoch(data, plan):
    def body(i, total):
      return total + jnp.sum(input_pipeline.train_batch(data, plan, i, MEAN, STD)["image"])

    return jax.lax.fori_loop(0, plan.order.shape[0], body, jnp.zeros([], jnp.float32))

  return jax.jit(epoch)


def timed(fn) -> float:
  start = time.perf_counter()
  fn()
  return time.perf_counter() - start


def report(label: str, rates: list[float]) -> float:
  median = float(np.median(rates))
  print(
    f"{label:<52} {median:8.0f} images/s (median of {len(rates)}: "
    f"{min(rates):.0f}-{max(rates):.0f})"
  )
  return median


def main():
  args = parse_args()
  print(f"{jax.devices()[0].device_kind} x{jax.device_count()}, JAX {jax.__version__}")
  split = training_split(args.image_folder)
  data = input_pipeline.to_device(split)
  b, steps = args.batch_size, args.steps
  plan = input_pipeline.epoch_plan(0, 1, num_examples=len(split), batch_size=b)
  num_epoch = plan.order.size

  augment = pipeline_epoch(b)
  jax.block_until_ready(augment(data, plan))

  config = quickstart.get_config()
  config.batch_size = b
  steps_per_epoch = input_pipeline.steps_per_epoch(len(split), b)
  tx = optimizer.create_optimizer(config, steps_per_epoch)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  bare_step = jax.jit(steps_lib.make_train_step(graphdef, tx), donate_argnums=0)
  batch = jax.jit(input_pipeline.train_batch, static_argnums=(3, 4))(data, plan, 0, MEAN, STD)
  state = jax.block_until_ready(bare_step(state, batch)[0])

  def bare():
    nonlocal state
    for _ in range(steps):
      state, _ = bare_step(state, batch)
    jax.block_until_ready(state)

  trainers = {
    n: Trainer(config, data, steps_per_epoch, per_dispatch=n) for n in (1, args.steps_per_dispatch)
  }
  for trainer in trainers.values():
    trainer.run(0, 1)
    trainer.wait()

  def chunked(trainer):
    trainer.run(0, steps)
    trainer.wait()

  rates = {k: [] for k in ("pipeline", "bare", "one", "many")}
  for _ in range(args.repeats):
    rates["pipeline"].append(num_epoch / timed(lambda: jax.block_until_ready(augment(data, plan))))
    rates["bare"].append(steps * b / timed(bare))
    rates["one"].append(steps * b / timed(lambda: chunked(trainers[1])))
    rates["many"].append(steps * b / timed(lambda: chunked(trainers[args.steps_per_dispatch])))
  pipeline = report(f"1. pipeline alone ({num_epoch} images per call):", rates["pipeline"])
  bare_rate = report(f"2. resnet8 step, fixed batch {b} on the device:", rates["bare"])
  one = report("3. resnet8 step, augmented in the step, 1 per call:", rates["one"])
  many = report(
    f"4. resnet8 steps, augmented, {args.steps_per_dispatch} per call (loop):", rates["many"]
  )
  print(
    f"pipeline / bare step: {pipeline / bare_rate:.0f}x; 3 / 2: {one / bare_rate:.3f}; "
    f"4 / 3: {many / one:.3f} (automatic steps per call here: "
    f"{steps_lib.steps_per_dispatch(config)})"
  )


if __name__ == "__main__":
  main()
