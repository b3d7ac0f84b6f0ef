"""What the speed benchmarks share: synthetic CIFAR-shaped data and the training program's
own compiled chunk of steps (``steps_lib.make_train_chunk``: data on the device, augmentation
in the step, the training program's donation), set up outside any timing."""

import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gradamp_jax import input_pipeline  # noqa: E402
from gradamp_jax.training import optimizer, train  # noqa: E402
from gradamp_jax.training import steps as steps_lib  # noqa: E402


def synthetic_split(n: int, seed: int = 0) -> input_pipeline.Split:
  """``n`` random uint8 images of CIFAR's size with random labels of 10 classes."""
  rng = np.random.default_rng(seed)
  return input_pipeline.Split(
    rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, n).astype(np.int32)
  )


def synthetic_dataset(train_images: int, test_images: int) -> input_pipeline.Dataset:
  return input_pipeline.Dataset(
    "synthetic",
    10,
    tuple(str(i) for i in range(10)),
    synthetic_split(train_images),
    synthetic_split(test_images, 1),
    None,
    input_pipeline.CIFAR10_MEAN,
    input_pipeline.CIFAR10_STD,
  )


class Trainer:
  """A config's training state and compiled chunk over a split on the first device.

  ``run(start, stop)`` runs steps ``start .. stop - 1`` of one epoch's plan, ``per_dispatch``
  steps per call (default: the training program's choice for this backend,
  ``steps_lib.steps_per_dispatch``), ``stop`` at most the split's steps per epoch, and returns
  without waiting;
  ``wait()`` waits for the state. The amplification schedule follows the update count,
  so successive calls move through its epochs (``steps_per_epoch`` updates each).
  """

  def __init__(
    self,
    config,
    data: input_pipeline.DeviceSplit,
    steps_per_epoch: int,
    per_dispatch: int | None = None,
  ):
    tx = optimizer.create_optimizer(config, steps_per_epoch)
    graphdef, self.state = steps_lib.create_train_state(config, 10, tx)
    self.data = data
    self.per_dispatch = per_dispatch or steps_lib.steps_per_dispatch(config)
    self.chunk = jax.jit(
      steps_lib.make_train_chunk(
        graphdef,
        tx,
        input_pipeline.CIFAR10_MEAN,
        input_pipeline.CIFAR10_STD,
        loop=self.per_dispatch > 1,
      ),
      donate_argnums=steps_lib.chunk_donation(self.per_dispatch > 1),
    )
    num_examples = len(data.labels)
    self.plan = input_pipeline.epoch_plan(
      config.seed, 1, num_examples=num_examples, batch_size=config.batch_size
    )
    steps = input_pipeline.steps_per_epoch(num_examples, config.batch_size)
    self.history = {k: jnp.zeros(steps, jnp.float32) for k in steps_lib.STEP_METRICS}

  def run(self, start: int, stop: int) -> None:
    for a, b in train.chunk_bounds(start, stop, self.per_dispatch):
      self.state, self.history, _ = self.chunk(self.state, self.data, self.plan, a, b, self.history)

  def wait(self):
    return jax.block_until_ready(self.state)


_COHORT_CHUNKS: dict = {}  # (config, steps per epoch, steps per call) -> the jitted chunk


class CohortTrainer:
  """``members`` copies of a config's initial training state stacked as one cohort (each
  with its own plan: seed k for member k) and the training program's cohort chunk
  (``cohort.make_cohort_chunk``) over a split on the first device; ``run`` and ``wait`` as
  :class:`Trainer`'s. Trainers of one config share the jitted chunk: a second cohort of the
  same size compiles nothing."""

  def __init__(
    self,
    config,
    data: input_pipeline.DeviceSplit,
    steps_per_epoch: int,
    members: int,
    per_dispatch: int | None = None,
  ):
    from gradamp_jax.training import cohort

    self.per_dispatch = per_dispatch or steps_lib.steps_per_dispatch(config)
    loop = self.per_dispatch > 1
    tx = optimizer.create_optimizer(config, steps_per_epoch)
    graphdef, state = steps_lib.create_train_state(config, 10, tx)
    self.state = cohort.stack([state] * members)
    key = (cohort.config_key(config, ignore=("seed",)), steps_per_epoch, self.per_dispatch)
    if key not in _COHORT_CHUNKS:
      chunk = cohort.make_cohort_chunk(
        config,
        steps_per_epoch,
        graphdef,
        input_pipeline.CIFAR10_MEAN,
        input_pipeline.CIFAR10_STD,
        loop=loop,
      )
      _COHORT_CHUNKS[key] = jax.jit(chunk, donate_argnums=steps_lib.chunk_donation(loop))
    self.chunk = _COHORT_CHUNKS[key]
    self.data = data
    num_examples = len(data.labels)
    plan = lambda seed: input_pipeline.epoch_plan(
      seed, 1, num_examples=num_examples, batch_size=config.batch_size
    )
    self.plans = jax.vmap(plan)(jnp.arange(members))
    self.rules = cohort.member_rules([config] * members)
    steps = input_pipeline.steps_per_epoch(num_examples, config.batch_size)
    self.history = {k: jnp.zeros((members, steps), jnp.float32) for k in steps_lib.STEP_METRICS}

  def run(self, start: int, stop: int) -> None:
    for a, b in train.chunk_bounds(start, stop, self.per_dispatch):
      self.state, self.history, _ = self.chunk(
        self.state, self.data, self.plans, a, b, self.history, self.rules
      )

  def wait(self):
    return jax.block_until_ready(self.state)
