"""The GPU suite's correctness checks (``benchmarks/gpu_suite.py`` runs them before any
timing), each a tiny configuration that prints ``PASS`` or ``FAIL`` with its numbers:

* :func:`cohort_equals_alone`: a cohort of 3 (one ``vmap``-ped program) against its members
  trained alone: selections identical, metrics, layer statistics and final state within
  :data:`COHORT`, the tolerances the test suite holds a cohort to (tests/test_cohort.py);
* :func:`nan_stays_its_own`: a member whose loss is NaN leaves the others' state bitwise what
  it is beside a finite member (the claim of ``steps.members_value_and_grad``);
* :func:`loop_equals_one_step_per_call`: the run with 50 steps per call against one step per
  call (GPU; on a CPU the other way round), within :data:`LOOP` (tests/test_train.py);
* :func:`cohort_auto`: the launcher's ``--cohort auto`` (``sweeps.cohorts.choose_size``)
  sizes a cohort from the device's memory (or ``--cohort_memory_gib``), and a cohort of that
  size compiles and runs a step;
* :func:`killed_run_resumes`: a run killed (SIGKILL, tests/fault_run.py) mid-epoch resumes
  from its checkpoint and ends bitwise equal to the uninterrupted run.

The comparison of two run folders (:func:`read_run`, :func:`compare`) is the test suite's
too: tests/test_cohort.py, tests/test_train.py and tests/test_faults.py call it.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import subprocess
import sys
import time
import types
from typing import NamedTuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
# gradamp_jax (and so jax) is imported inside the functions: gpu_suite.py sets the compilation
# cache's environment before jax is first imported.
METRICS, LAYER_STATS, DIRECTIONALITY = "metrics.jsonl", "layer_stats.jsonl", "directionality.jsonl"
RUN_FILES = (METRICS, LAYER_STATS, DIRECTIONALITY)


class Tolerance(NamedTuple):
  """How close two runs must be; a field of None is not compared. Epochs, steps, amplified
  layers and which layers are selected are always compared exactly."""

  metrics: dict  # metrics.jsonl key ("*": every number) -> largest relative difference
  values: float | None  # layer statistics' values: relative
  zscores: float | None  # layer statistics' normalized values and scales: absolute
  state: float | None  # each leaf of the final state: max |a - b| over max |b|
  directionality: float | None = None  # directionality.jsonl's G and G′: relative


# A cohort's member against its run alone (tests/test_cohort.py). The two programs round
# differently, and where a ReLU's input rounds to the other side of zero, one position's
# gradient is passed or stopped: that step's gradient of the layer moves by about
# 1/sqrt(positions summed), ~1 % at batch 8. Quantities that hold gradients (the optimizer's
# trace, the directionality sums and G, z-scores, zero-initialised parameters) differ by that
# much; the losses, averages over every example and step, stay near rounding. Seen on a
# 2-core AMD EPYC (AVX-512), tiny_config, cohorts of 8 (48 images) and 4 (400), worst
# member: state 0.068, G 0.017, z-scores 0.0067, metrics 3e-5; the same run with lax against
# im2col convolutions: state 0.068, G 0.0057, metrics 2e-5. A wrong factor, layer, member or
# data order moves the state by O(1) (the trace holds the last steps' gradients); other
# examples move the losses far past 3e-4.
COHORT = Tolerance(
  metrics={"train_loss": 3e-4, "test_loss": 3e-4, "*": 1e-3},
  values=0.1,
  zscores=0.1,
  state=0.2,
  directionality=0.1,
)
# Steps in a loop against one step per call (tests/test_train.py): the training loss.
LOOP = Tolerance(metrics={"train_loss": 1e-3}, values=None, zscores=None, state=None)
# A resumed run against the uninterrupted one (tests/test_faults.py, tests/test_train.py).
BITWISE = Tolerance(metrics={"*": 0.0}, values=0.0, zscores=0.0, state=0.0, directionality=0.0)
EXACT_KEYS = ("epoch", "step", "amplified_layers")


class Check(NamedTuple):
  name: str
  passed: bool
  numbers: dict

  def line(self) -> str:
    numbers = ", ".join(f"{k} {_format(v)}" for k, v in self.numbers.items())
    return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {numbers}"


def _format(value) -> str:
  if isinstance(value, float):
    return f"{value:.3g}"
  if isinstance(value, (list, tuple)):
    return "; ".join(str(v) for v in value)
  return str(value)


# ----------------------------------------------------------------------------- run folders


class Run(NamedTuple):
  rows: dict  # file name -> its rows without the timing fields
  leaves: list  # the newest checkpoint's arrays


def read_run(workdir, files=RUN_FILES) -> Run:
  """A run folder's rows (``files`` that exist) and its newest checkpoint, restored onto
  one device whatever devices and processes saved it."""
  import jax
  import orbax.checkpoint as ocp

  from gradamp_jax import jsonl, run_folder

  rows = {}
  for name in files:
    path = os.path.join(workdir, name)
    if os.path.exists(path):
      timing = run_folder.TIMING_FIELDS
      rows[name] = [{k: v for k, v in r.items() if k not in timing} for r in jsonl.read_jsonl(path)]
  folder = os.path.join(workdir, "checkpoints")
  step = max((int(s) for s in os.listdir(folder) if s.isdigit()), default=None)
  leaves = []
  if step is not None:
    path = os.path.join(folder, str(step), "default")
    with ocp.StandardCheckpointer() as checkpointer:
      device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
      target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        checkpointer.metadata(path).item_metadata,
      )
      leaves = [np.asarray(x) for x in jax.tree.leaves(checkpointer.restore(path, target))]
  return Run(rows, leaves)


def _relative(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    return math.inf
  if np.array_equal(a, b, equal_nan=True):
    return 0.0
  scale = np.max(np.abs(b)) if b.size else 0.0
  return float(np.max(np.abs(a - b)) / scale) if scale > 0 else math.inf


def _absolute(a, b) -> float:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape:
    return math.inf
  return 0.0 if np.array_equal(a, b, equal_nan=True) else float(np.max(np.abs(a - b)))


def compare(got: Run, want: Run, tolerance: Tolerance) -> tuple[list[str], dict]:
  """Where ``got`` is farther from ``want`` than ``tolerance`` allows (one line each), and
  the largest differences seen."""
  problems, numbers = [], {}
  if set(got.rows) != set(want.rows):
    problems.append(f"files {sorted(got.rows)} against {sorted(want.rows)}")
  metrics = got.rows.get(METRICS, []), want.rows.get(METRICS, [])
  if [r["epoch"] for r in metrics[0]] != [r["epoch"] for r in metrics[1]] or not metrics[1]:
    problems.append(f"epochs {[r['epoch'] for r in metrics[0]]} against {len(metrics[1])} rows")
  worst = {}
  for a, b in zip(*metrics):
    if a.keys() != b.keys():
      problems.append(f"epoch {b['epoch']}: metrics keys {sorted(a)} against {sorted(b)}")
      continue
    for key, value in b.items():
      rtol = tolerance.metrics.get(key, tolerance.metrics.get("*"))
      if key in EXACT_KEYS or not isinstance(value, (int, float)) or isinstance(value, bool):
        if a[key] != value:
          problems.append(f"epoch {b['epoch']}: {key} {a[key]} against {value}")
      elif rtol is not None:
        worst[key] = max(worst.get(key, 0.0), _relative(a[key], value))
  if worst:
    key = max(worst, key=worst.get)
    numbers["metrics_rdiff"] = worst[key]
    rtol = tolerance.metrics.get(key, tolerance.metrics.get("*"))
    if worst[key] > rtol:
      problems.append(f"metrics: {key} differs by {worst[key]:.3g} (relative) > {rtol:g}")
  stats = got.rows.get(LAYER_STATS, []), want.rows.get(LAYER_STATS, [])
  chosen = [[(r["epoch"], r["layer"], r["selected"]) for r in rows] for rows in stats]
  if chosen[0] != chosen[1]:
    problems.append("selections differ")
  numbers["selected"] = f"{sum(r['selected'] for r in stats[1])} of {len(stats[1])}"
  pairs = [
    (LAYER_STATS, "value", tolerance.values, _relative),
    (LAYER_STATS, "normalized", tolerance.zscores, _absolute),
    (LAYER_STATS, "scale", tolerance.zscores, _absolute),
    (DIRECTIONALITY, "G", tolerance.directionality, _relative),
    (DIRECTIONALITY, "G_prime", tolerance.directionality, _relative),
  ]
  for name, key, limit, measure in pairs:
    rows = got.rows.get(name, []), want.rows.get(name, [])
    if limit is None or not rows[1]:
      continue
    if len(rows[0]) != len(rows[1]):
      problems.append(f"{name}: {len(rows[0])} rows against {len(rows[1])}")
      continue
    diff = measure([r[key] for r in rows[0]], [r[key] for r in rows[1]])
    label = f"{name.split('.')[0]}.{key}"
    numbers[f"{label}_{'rdiff' if measure is _relative else 'adiff'}"] = diff
    if diff > limit:
      problems.append(f"{label} differs by {diff:.3g} > {limit:g}")
  if tolerance.state is not None:
    if len(got.leaves) != len(want.leaves) or not want.leaves:
      problems.append(f"state: {len(got.leaves)} arrays against {len(want.leaves)}")
    else:
      diff = max(_relative(a, b) for a, b in zip(got.leaves, want.leaves))
      numbers["state_rdiff"] = diff
      if diff > tolerance.state:
        problems.append(
          f"state differs by {diff:.3g} (relative, worst array) > {tolerance.state:g}"
        )
  return problems, numbers


def compare_runs(name: str, pairs, tolerance: Tolerance) -> Check:
  """A check that each ``(got, want)`` pair of run folders (or :class:`Run`) agrees within
  ``tolerance``; its numbers are the largest differences over the pairs."""
  problems, numbers = [], {}
  for got, want in pairs:
    got, want = (r if isinstance(r, Run) else read_run(r) for r in (got, want))
    found, seen = compare(got, want, tolerance)
    problems += found
    for key, value in seen.items():
      numbers[key] = max(numbers.get(key, value), value) if isinstance(value, float) else value
  if problems:
    numbers["problems"] = problems
  return Check(name, not problems, numbers)


# ----------------------------------------------------------------------------- set-up


def tiny_config(seed: int = 0):
  """ResNet-8, batch 8, two epochs: epoch 1 analysed (G, two-sided, threshold 0.5), epoch 2
  amplified by 2, at a learning rate of 1e-4. At 0.01 the training on random data is chaotic:
  the same run with lax and with im2col convolutions (rounding alone) ends with states 1 %
  apart on 1 seed of 4 at 48 images, O(1) apart with other selections at 400; at 1e-4 the
  runs stay within :data:`COHORT`."""
  from configs import default

  config = default.get_config()
  config.model, config.conv, config.seed = "resnet8", "lax", seed
  config.batch_size, config.eval_batch_size = 8, 16
  config.phases = ((2, 1e-4, 1, 2.0),)
  config.amplification.update(method="intelligent", measure="G", case=2, threshold=0.5)
  return config


@contextlib.contextmanager
def synthetic_data(train_images: int, test_images: int):
  """The training program reads random CIFAR-shaped images (``benchmarks.harness``) instead
  of its configured data, one training split for every member."""
  from benchmarks.harness import synthetic_dataset
  from gradamp_jax.training import data as data_lib

  dataset = synthetic_dataset(train_images, test_images)
  keep = np.arange(train_images, dtype=np.int32)
  load = data_lib.load
  data_lib.load = lambda configs: data_lib.MembersData(
    dataset.train, [dataset] * len(configs), [keep] * len(configs)
  )
  try:
    yield dataset
  finally:
    data_lib.load = load


@contextlib.contextmanager
def quiet():
  """The training program's lines (progress, summaries, warnings) kept off the output."""
  with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    yield


# ----------------------------------------------------------------------------- the checks


def cohort_equals_alone(root: str, train_images: int, members: int = 3) -> Check:
  """A cohort of ``members`` seeds trained as one ``vmap``-ped program against the same
  runs trained alone (each with its run's program), within :data:`COHORT`, at float32
  precision. Leaves the runs in ``root/alone*`` and ``root/member*``."""
  import jax

  from gradamp_jax.training import train

  configs = [tiny_config(seed) for seed in range(members)]
  alone = [os.path.join(root, f"alone{k}") for k in range(members)]
  stacked = [os.path.join(root, f"member{k}") for k in range(members)]
  # float32 convolutions and products on a GPU too (not TensorFloat-32): the tolerances are
  # rounding's, and both programs are compared at the precision a CPU computes.
  with synthetic_data(train_images, 16), quiet(), jax.default_matmul_precision("highest"):
    train.train_cohort(configs, alone, stacked=False)
    train.train_cohort(configs, stacked, stacked=True)
  return compare_runs(f"a cohort of {members} equals its runs alone", zip(stacked, alone), COHORT)


def nan_stays_its_own(model, dtype, batch_size, steps, members) -> Check:
  """``steps`` steps of a cohort of ``members`` (:func:`cohort_trainer`) whose last member
  has a NaN parameter (so a NaN loss and gradients) against the same cohort with that member
  finite: every other member's state must be bitwise the same, and the NaN member must have
  gone non-finite."""
  import jax

  outcomes = []
  for poisoned in (False, True):
    trainer = cohort_trainer(model, dtype, batch_size, steps, members)
    if poisoned:
      bias = trainer.state.params["fc"]["bias"]
      trainer.state.params["fc"]["bias"] = bias.at[members - 1, 0].set(np.nan)
    trainer.run(0, steps)
    outcomes.append(jax.device_get(trainer.wait()))
    del trainer
  finite, poisoned = outcomes
  from gradamp_jax.training import cohort

  differing, largest = 0, 0.0
  for k in range(members - 1):
    for a, b in zip(*(jax.tree.leaves(cohort.member(s, k)) for s in (poisoned, finite))):
      if not np.array_equal(a, b):
        differing += 1
        largest = max(largest, _absolute(a, b))
  bad_steps = [int(b) for b in poisoned.bad_step]
  gone = bad_steps[-1] >= 0 and all(b < 0 for b in bad_steps[:-1])
  numbers = dict(
    members=members,
    steps=steps,
    bad_step=bad_steps,
    arrays_differing=differing,
    largest_difference=largest,
  )
  return Check(
    f"a NaN member leaves the other {members - 1} bitwise alone", gone and not differing, numbers
  )


def loop_equals_one_step_per_call(root: str, train_images: int, alone: str) -> Check:
  """Seed 0 trained with the other choice of steps per call than ``alone`` (the backend's
  default: 50 on a GPU, 1 on a CPU; trained here if it is not there), within :data:`LOOP`."""
  import jax

  from gradamp_jax.training import train

  config = tiny_config(0)
  config.steps_per_dispatch = 1 if jax.default_backend() != "cpu" else 50
  workdir = os.path.join(root, f"dispatch{config.steps_per_dispatch}")
  with synthetic_data(train_images, 16), quiet():
    train.train_and_evaluate(tiny_config(0), alone)  # nothing to do if it ran
    train.train_and_evaluate(config, workdir)
  name = f"{config.steps_per_dispatch} steps per call equal the default's"
  check = compare_runs(name, [(workdir, alone)], LOOP)
  spe = train_images // config.batch_size
  return check._replace(numbers=dict(steps_per_epoch=spe, **check.numbers))


def cohort_auto(model, dtype, batch_size, steps, train_images, memory_gib=None):
  """``--cohort auto`` for ``model`` (the launcher's ``choose_size``: the device's memory,
  or ``memory_gib``, for a training split of ``train_images``), then one step of a cohort of
  that size on :func:`cohort_trainer`; returns the check and K."""
  from gradamp_jax.sweeps import cohorts

  overrides = [
    f"--config.model={model}",
    f"--config.batch_size={batch_size}",
    f"--config.half_precision={dtype == 'bfloat16'}",
    "--config.amplification.method=none",
  ]
  args = types.SimpleNamespace(
    config=os.path.join(ROOT, "configs", "quickstart.py"),
    cohort_memory_gib=memory_gib,
    runs_per_device=None,
  )
  out = io.StringIO()
  with synthetic_data(train_images, 16), contextlib.redirect_stdout(out):
    size = cohorts.choose_size(args, [dict(args={})], overrides)
  print(out.getvalue().strip().splitlines()[-1], flush=True)
  start = time.perf_counter()
  trainer = cohort_trainer(model, dtype, batch_size, steps, size)
  trainer.run(0, 1)
  finite = bool(np.isfinite(np.asarray(trainer.history["loss"][:, 0])).all())
  numbers = dict(K=size, compile_and_step_s=time.perf_counter() - start, losses_finite=finite)
  del trainer
  return Check(f"--cohort auto picks K = {size}, which runs a step", finite, numbers), size


def cohort_trainer(model, dtype, batch_size, steps, members):
  """The suite's cohort of ``members`` (``benchmarks.harness.CohortTrainer``) over
  ``steps`` batches of random images: one compilation per size, shared."""
  from benchmarks.harness import CohortTrainer, synthetic_split
  from gradamp_jax import input_pipeline

  data = input_pipeline.to_device(synthetic_split(steps * batch_size))
  return CohortTrainer(base_config(model, dtype, batch_size), data, 10_000, members)


def base_config(model, dtype, batch_size):
  """The suite's training configuration: ``model`` at ``batch_size``, amplification none
  with directionality tracked (as in every run)."""
  from configs import default

  config = default.get_config()
  config.model, config.batch_size = model, batch_size
  config.half_precision = dtype == "bfloat16"
  config.phases = ((1, 0.1, 0, 1), (3, 0.1, 1, 2))
  config.amplification.method = "none"
  return config


FAULT = "KILL@2.2"  # the amplified epoch's third step (steps 2 and 3 are one call)


def killed_run_resumes(root: str) -> Check:
  """tests/fault_run.py's run (mock CIFAR, 6 steps per epoch, 2 steps per call, one on a
  CPU, two epochs here) uninterrupted, and killed at :data:`FAULT` then run again: bitwise
  the same. Leaves the runs in ``root``."""
  import jax

  script = os.path.join(ROOT, "tests", "fault_run.py")
  overrides = ["--config.phases=((2, 0.05, 1, 2),)"]
  if jax.default_backend() == "cpu":  # steps in a loop: 30x slower convolution gradients
    overrides.append("--config.steps_per_dispatch=1")
  whole, resumed = os.path.join(root, "uninterrupted"), os.path.join(root, "resumed")
  codes = []
  for workdir, fault in ((whole, None), (resumed, FAULT), (resumed, None)):
    command = [sys.executable, script, workdir, *([fault] if fault else []), *overrides]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    codes.append(result.returncode)
    if result.returncode not in (0, -9):
      sys.stderr.write(result.stderr[-3000:])
  numbers = dict(exit_statuses=codes)
  if codes != [0, -9, 0]:
    return Check(f"a run killed at {FAULT} resumes to the same end", False, numbers)
  check = compare_runs("", [(resumed, whole)], BITWISE)
  return check._replace(
    name=f"a run killed at {FAULT} resumes to the same end", numbers=dict(numbers, **check.numbers)
  )
