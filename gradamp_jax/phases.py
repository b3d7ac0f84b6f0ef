"""Training strategies: phases ``(end_epoch, learning_rate, is_amp, amp_factor)``.

The paper's ``params`` list (Basodi et al. 2023, §4, Fig. 1), e.g. ``[(50, 0.1, 0, 1),
(100, 0.1, 1, 2)]``. Epochs count from 1; a phase ends with its ``end_epoch``, inclusive.
"""

from __future__ import annotations

import math
import numbers
from typing import Iterable, NamedTuple, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Phase(NamedTuple):
  """One phase of a training strategy.

  Attributes:
    end_epoch: last epoch (1-based, inclusive) of the phase.
    learning_rate: constant learning rate within the phase.
    is_amp: whether this phase amplifies.
    amp_factor: amplification factor ``a`` of eq. 2 (1 when ``is_amp`` is false).
  """

  end_epoch: int
  learning_rate: float
  is_amp: bool
  amp_factor: float

  @property
  def factor(self) -> float:
    """The factor actually applied: ``amp_factor`` in amplified phases, else 1."""
    return float(self.amp_factor) if self.is_amp else 1.0


PhaseLike = Union[Phase, Sequence[float]]


def parse_phases(phases: Iterable[PhaseLike]) -> tuple[Phase, ...]:
  """Validates a strategy and returns it as a tuple of :class:`Phase`.

  Args:
    phases: a non-empty sequence of :class:`Phase` or plain 4-tuples (docs/method.md §5).

  Returns:
    A tuple of :class:`Phase`; ``is_amp`` becomes a bool.

  Raises:
    ValueError: naming the bad phase and field: a malformed entry, end epochs not positive
      and strictly increasing, a learning rate or factor not positive and finite.

  Example:
    >>> parse_phases([(1, 0.1, 0, 1), (3, 0.1, 1, 2)])[1]
    Phase(end_epoch=3, learning_rate=0.1, is_amp=True, amp_factor=2.0)
  """
  parsed = []
  if isinstance(phases, (str, bytes)):
    raise ValueError(f"phases: expected a sequence of 4-tuples, got {phases!r}")
  for i, entry in enumerate(phases):
    where = f"phases[{i}]={tuple(entry) if _is_seq(entry) else entry!r}"
    if not _is_seq(entry) or len(entry) != 4:
      raise ValueError(
        f"{where}: each phase must be (end_epoch, learning_rate, is_amp, amp_factor)"
      )
    end, lr, is_amp, factor = entry
    if not is_positive_integer(end):
      raise ValueError(f"{where}: end_epoch must be a positive integer, got {end!r}")
    end = int(end)
    if parsed and end <= parsed[-1].end_epoch:
      raise ValueError(
        f"{where}: end_epoch must be greater than the previous phase's "
        f"({parsed[-1].end_epoch}); end epochs must strictly increase"
      )
    if not _positive_finite(lr):
      raise ValueError(f"{where}: learning_rate must be positive and finite, got {lr!r}")
    if not (isinstance(is_amp, (bool, np.bool_)) or (is_real(is_amp) and is_finite_real(is_amp))):
      raise ValueError(
        f"{where}: is_amp must be 0/1 or a bool (non-zero: amplified), got {is_amp!r}"
      )
    if not _positive_finite(factor):
      raise ValueError(f"{where}: amp_factor must be positive and finite, got {factor!r}")
    parsed.append(Phase(end, float(lr), bool(is_amp), float(factor)))
  if not parsed:
    raise ValueError("phases: at least one phase is required")
  return tuple(parsed)


def num_epochs(phases: Iterable[PhaseLike]) -> int:
  """Total number of epochs of a strategy (the last phase's ``end_epoch``)."""
  return parse_phases(phases)[-1].end_epoch


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
  """Updates per epoch as the schedule counts them: full batches only (50,000 images in
  batches of 128 give 390). A loop that also trains on a ragged last batch drifts a step per
  epoch; check with :func:`~gradamp_jax.check_epoch_start`.

  Raises:
    ValueError: ``batch_size`` is not a positive integer or exceeds ``num_examples``.
  """
  if not is_positive_integer(batch_size):
    raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
  if num_examples < batch_size:
    raise ValueError(
      f"batch_size {batch_size} exceeds the {num_examples} training "
      "examples: an epoch would hold no full batch"
    )
  return int(num_examples) // int(batch_size)


def check_steps_per_epoch(steps_per_epoch: int) -> int:
  if not is_positive_integer(steps_per_epoch):
    raise ValueError(f"steps_per_epoch must be an integer >= 1, got {steps_per_epoch!r}")
  return int(steps_per_epoch)


def learning_rate_schedule(phases: Iterable[PhaseLike], steps_per_epoch: int) -> optax.Schedule:
  """Piecewise-constant learning rate of a strategy, as an optax schedule.

  Update ``t`` (0-based) gets the rate of epoch ``t // steps_per_epoch + 1``'s phase; past
  the last phase the last rate is kept.

  Returns:
    A function from the update count to the learning rate, usable inside ``jit``.

  Example:
    >>> lr = learning_rate_schedule([(1, 0.1, 0, 1), (3, 0.01, 1, 2)], steps_per_epoch=10)
    >>> print(f"{lr(9):.3g} {lr(10):.3g}")  # float32
    0.1 0.01
  """
  parsed = parse_phases(phases)
  steps_per_epoch = check_steps_per_epoch(steps_per_epoch)
  ends = np.array([p.end_epoch * steps_per_epoch for p in parsed[:-1]], np.int64)
  rates = np.array([p.learning_rate for p in parsed], np.float32)

  def schedule(count):
    return jnp.asarray(rates)[jnp.searchsorted(jnp.asarray(ends), count, side="right")]

  return schedule


def _is_seq(x) -> bool:
  return isinstance(x, (tuple, list, np.ndarray))


def is_traced(x) -> bool:
  """Whether ``x`` is a JAX tracer."""
  return isinstance(x, jax.core.Tracer)


def is_real(x) -> bool:
  """A number (not a bool, not a string)."""
  return isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_))


def is_finite_real(x) -> bool:
  """A finite number: a Python or NumPy one, or a 0-d array (not a bool, not a string)."""
  if isinstance(x, (bool, np.bool_, str, bytes)):
    return False
  try:
    return math.isfinite(float(x))
  except (TypeError, ValueError):
    return False


def is_int(x) -> bool:
  """A Python or NumPy integer (not a bool; ``3.0`` is not one)."""
  return isinstance(x, numbers.Integral) and not isinstance(x, (bool, np.bool_))


def is_positive_integer(x) -> bool:
  """A number with an integer value >= 1 (``3`` or ``3.0``; not ``True``, ``"3"``, ``inf``)."""
  return is_real(x) and math.isfinite(x) and float(x).is_integer() and x >= 1


def _positive_finite(x) -> bool:
  return is_real(x) and math.isfinite(x) and x > 0
