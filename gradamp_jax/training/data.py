"""A config's data: read once for every member of a cohort (one run is a cohort of one)."""

from __future__ import annotations

from typing import NamedTuple

import jax

import gradamp_jax as ga
from gradamp_jax import input_pipeline
from gradamp_jax.training import checkpointing


class MembersData(NamedTuple):
  """The data of runs that differ at most in their seed (their validation hold-out)."""

  pool: input_pipeline.Split  # the training split before the hold-out, once for every member
  datasets: list  # each member's input_pipeline.Dataset, as input_pipeline.load returns it
  keep: list  # each member's int32 positions of its training examples in ``pool``


# The config's fields that input_pipeline.load_for_seeds takes, but for the seeds and download.
_DATA_FIELDS = ("dataset", "data_dir", "image_folder", "train_split", "validation_fraction")


def load(configs) -> MembersData:
  """Reads the members' data; with several processes the lead first (it may download and
  prepare it), then the others."""
  seeds, args = [c.seed for c in configs], {k: configs[0][k] for k in _DATA_FIELDS}
  read = lambda download: input_pipeline.load_for_seeds(seeds, **args, download=download)
  data = read(configs[0].download) if jax.process_index() == 0 else None
  checkpointing.sync("dataset prepared")  # a no-op in a single-process run
  return MembersData(*(data if data is not None else read(False)))


def load_dataset(config) -> input_pipeline.Dataset:
  """One run's :class:`~gradamp_jax.input_pipeline.Dataset`."""
  return load([config]).datasets[0]


def steps_per_epoch(config, num_train: int) -> int:
  """Full batches per epoch; refuses a training split without one, naming the fields."""
  if num_train < config.batch_size:
    held_out = (
      f" after holding out validation_fraction={config.validation_fraction}"
      if config.validation_fraction
      else ""
    )
    raise ValueError(
      f"config.batch_size: {config.batch_size} exceeds the {num_train} training examples "
      f"of train_split={config.train_split!r}{held_out}, so an epoch holds no full batch; "
      "use a smaller batch_size or a larger train_split"
    )
  return ga.steps_per_epoch(num_train, config.batch_size)


def member_plan(seed, keep, epoch, *, batch_size: int) -> input_pipeline.EpochPlan:
  """A member's :func:`~gradamp_jax.input_pipeline.epoch_plan` over its ``keep`` (its
  training examples' positions in the pool), as positions in the pool."""
  plan = input_pipeline.epoch_plan(seed, epoch, num_examples=keep.shape[0], batch_size=batch_size)
  return plan._replace(order=keep[plan.order])
