"""The GPU program checked, then timed, in one command, for a GPU (or, with --tiny, a CPU).

    python benchmarks/gpu_suite.py --out OUT [--image_folder ~/data/cifar10-jpg] [--tiny]
        [--budget_s S] [--cohort_memory_gib G]

First the correctness checks of ``benchmarks/gpu_checks.py`` (each a tiny configuration,
printed as ``PASS`` or ``FAIL`` with its numbers): a cohort of 3 against its runs alone, a NaN
member against the others, 50 steps per call against one, ``--cohort auto`` (K from the
device's memory, or ``--cohort_memory_gib`` on a CPU) and a step of a cohort of that K, a run
killed mid-epoch against the uninterrupted one. Then the figures, in order of value, on the
first device:

* ``step``: training images/s of the training program's compiled chunk of steps (data on
  the device as uint8, augmentation in the step, donated state, amplification ``none`` with
  directionality tracking as in every run; ``steps`` steps per call), the main model
  (resnet18, bfloat16, batch 128) first; ``compile_seconds`` is the first call;
* ``cohort xK``: a cohort of K = 1, 4, 16 and the largest that fits (the auto check's K) of
  the main model in one program: aggregate images/s, ``per_run`` images/s and
  ``vs_alone`` (per run over the main model's step);
* ``amplification``: the chunk with none, G and G′ amplification in the analysis epoch
  (accumulating) and while amplifying, variants taking turns; ``time_ratio``: step time
  over none's;
* ``epoch``: the training program itself (``train.train_and_evaluate``) for two epochs of
  the main model: the second epoch's seconds, evaluation included, and its training
  images/s, input pipeline included; ``compile_seconds`` is the first epoch's extra time.
  Data: ``--image_folder`` or, without it, random uint8 images of CIFAR-10's size;
* the rest: ``step`` for resnet18 in float32 and bfloat16 at batch 128 and 512, resnet20,
  vgg19 and resnet50 in bfloat16 at batch 128; ``step, 1 per call`` (the main model,
  ``steps_per_dispatch=1``); ``concurrent``: aggregate images/s of 1, 2 and 4 processes
  training the main model at once, each with ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.9/N, all
  starting their timed steps together (each reports its best of the repeats).

Each check and figure is written to ``OUT/gpu_suite.json`` (a list of records, each with
``unit``, ``name`` and ``device``; a figure's with ``model``, ``dtype``, ``batch_size``,
``images_per_second`` and what else it measured; a check's with ``passed`` and its numbers)
the moment it is measured, and ``OUT/gpu_suite.md`` (the same as markdown tables) rewritten.
A rerun with the same OUT on the same kind of device skips every unit already there: a run
killed half way, run again, completes the tables. ``--budget_s`` stops before a unit that
its estimate (the last such unit's time, or a guess) would take past that many seconds from
the start, with everything so far written. Exit status 1 if a check failed.

``--tiny`` runs the same code paths with resnet8, small batches and data on a CPU (CI runs
it). Compilations are cached in ``OUT/xla_cache`` unless ``JAX_COMPILATION_CACHE_DIR`` is
set, so the concurrent processes and the killed run's restarts reuse the programs.
"""

import argparse
import contextlib
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from benchmarks import gpu_checks  # noqa: E402
from benchmarks.gpu_checks import base_config  # noqa: E402

FULL = dict(
  step=[
    ("resnet18", "float32", 128),
    ("resnet18", "bfloat16", 128),
    ("resnet18", "float32", 512),
    ("resnet18", "bfloat16", 512),
    ("resnet20", "bfloat16", 128),
    ("vgg19", "bfloat16", 128),
    ("resnet50", "bfloat16", 128),
  ],
  main=("resnet18", "bfloat16", 128),
  steps=50,
  repeats=3,
  train_images=50_000,
  test_images=10_000,
  processes=(1, 2, 4),
  cohorts=(1, 4, 16),
  nan_members=4,  # the NaN check's cohort: the program of the cohort x4 figure
  check_images=400,  # 50 steps an epoch: the loop check's calls are of 50 steps
)
TINY = dict(
  step=[("resnet8", "float32", 8), ("resnet8", "bfloat16", 8)],
  main=("resnet8", "float32", 8),
  steps=3,
  repeats=2,
  train_images=128,
  test_images=64,
  processes=(1, 2),
  cohorts=(1,),
  nan_members=3,  # the auto check's K: one program for both and the largest cohort's figure
  check_images=48,
  cohort_memory_gib=0.1,  # K = 3 for resnet8 at batch 8
)


def step_throughput(model, dtype, batch_size, steps, repeats, per_dispatch=None, ready=None):
  """Compile seconds and best images/s of the training chunk over ``repeats`` × ``steps``
  steps, ``per_dispatch`` steps per call (default: all); with ``ready`` (a path), waits for
  ``ready + '.go'`` after compiling (concurrent runs)."""
  from benchmarks.harness import Trainer, synthetic_split
  from gradamp_jax import input_pipeline

  data = input_pipeline.to_device(synthetic_split(steps * batch_size))
  trainer = Trainer(
    base_config(model, dtype, batch_size),
    data,
    steps_per_epoch=10_000,
    per_dispatch=per_dispatch or steps,
  )
  compile_seconds, best = _timed(trainer, steps, repeats, ready)
  return compile_seconds, steps * batch_size / best


def _timed(trainer, steps, repeats, ready=None):
  """Seconds of ``trainer``'s first (compiling) call, and its best of ``repeats`` calls of
  ``steps`` steps; ``ready``: a file to create, then wait for ``ready.go``, before timing."""
  start = time.perf_counter()
  trainer.run(0, 1)
  trainer.wait()
  compile_seconds = time.perf_counter() - start
  if ready:
    open(ready, "w").close()
    while not os.path.exists(ready + ".go"):
      time.sleep(0.01)
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    trainer.run(0, steps)
    trainer.wait()
    best = min(best, time.perf_counter() - start)
  return compile_seconds, best


def epoch_time(model, dtype, batch_size, sizes, image_folder):
  """Two epochs of the training program; the second epoch's row, and the first's extra."""
  from gradamp_jax import run_folder
  from gradamp_jax.training import train

  config = base_config(model, dtype, batch_size)
  config.phases = ((2, 0.1, 0, 1),)
  data = contextlib.nullcontext()
  if image_folder:
    config.image_folder = image_folder
  else:
    data = gpu_checks.synthetic_data(*sizes)
  with tempfile.TemporaryDirectory() as workdir, data, gpu_checks.quiet():
    train.train_and_evaluate(config, workdir)
    first, second = run_folder.read_rows(workdir, run_folder.METRICS)
  return second, first["epoch_seconds"] - second["epoch_seconds"]


def cohort_throughput(model, dtype, batch_size, steps, repeats, members):
  """Compile seconds and best aggregate images/s of a cohort of ``members`` runs (the
  training program's cohort chunk, ``steps`` steps per call), as :func:`step_throughput`."""
  trainer = gpu_checks.cohort_trainer(model, dtype, batch_size, steps, members)
  compile_seconds, best = _timed(trainer, steps, repeats)
  return compile_seconds, members * steps * batch_size / best


def amplification_overhead(model, dtype, batch_size, steps, repeats):
  from benchmarks import amplification_overhead as overhead
  from benchmarks.harness import synthetic_split
  from gradamp_jax import input_pipeline

  configs = {}
  for name in ("none", "G", "G_prime"):
    amp, _ = overhead.VARIANTS[name]
    config = base_config(model, dtype, batch_size)
    config.track_directionality = False
    config.amplification.update(amp)
    configs[name] = config
  data = input_pipeline.to_device(synthetic_split(steps * batch_size))
  best, _ = overhead.time_all(configs, data, steps, repeats)
  return best


def concurrent(n, model, dtype, batch_size, steps, repeats, out):
  """Aggregate images/s of ``n`` worker processes timed over the same window."""
  env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=f"{0.9 / n:.3f}")
  folder = tempfile.mkdtemp(dir=out)
  workers = []
  for i in range(n):
    ready = os.path.join(folder, f"w{i}")
    workers.append(
      subprocess.Popen(
        [
          sys.executable,
          os.path.abspath(__file__),
          "--worker",
          ready,
          "--model",
          model,
          "--dtype",
          dtype,
          "--batch_size",
          str(batch_size),
          "--steps",
          str(steps),
          "--repeats",
          str(repeats),
        ],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
      )
    )
  while not all(os.path.exists(os.path.join(folder, f"w{i}")) for i in range(n)):
    if any(w.poll() not in (None, 0) for w in workers):
      raise SystemExit("a concurrent worker failed")
    time.sleep(0.05)
  for i in range(n):
    open(os.path.join(folder, f"w{i}.go"), "w").close()
  rates = []
  for w in workers:
    output, _ = w.communicate()
    if w.returncode:
      raise SystemExit(f"a concurrent worker failed with status {w.returncode}")
    rates.append(json.loads(output.strip().splitlines()[-1])["images_per_second"])
  shutil.rmtree(folder)
  return rates


def markdown(records):
  checks = [r for r in records if "passed" in r]
  figures = [r for r in records if "passed" not in r]
  lines = ["| check | result | numbers |", "|---|---|---|"]
  for r in checks:
    numbers = gpu_checks.Check(r["name"], r["passed"], r["numbers"]).line().split(": ", 1)[1]
    lines.append(f"| {r['name']} | {'PASS' if r['passed'] else 'FAIL'} | {numbers} |")
  lines += ["", "| name | model | dtype | batch | images/s | more |", "|---|---|---|---:|---:|---|"]
  hidden = ("unit", "name", "model", "dtype", "batch_size", "images_per_second", "device")
  for r in figures:
    more = ", ".join(
      f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
      for k, v in r.items()
      if k not in hidden
    )
    lines.append(
      f"| {r['name']} | {r['model']} | {r['dtype']} | {r['batch_size']} | "
      f"{r['images_per_second']:,.0f} | {more} |"
    )
  return "\n".join(lines) + "\n"


class Records:
  """``OUT/gpu_suite.json``, rewritten whole (through a temporary file) at each unit."""

  def __init__(self, out: str, device: str, header: str):
    self.path, self.device, self.header = os.path.join(out, "gpu_suite.json"), device, header
    self.records = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        self.records = json.load(f)

  def done(self, unit: str) -> list:
    return [r for r in self.records if r.get("unit") == unit and r.get("device") == self.device]

  def add(self, unit: str, records: list) -> None:
    for record in records:
      record = dict(unit=unit, **record, device=self.device)
      self.records.append(record)
      print(json.dumps(record), flush=True)
    for path, text in (
      (self.path, json.dumps(self.records, indent=2)),
      (self.path[: -len(".json")] + ".md", f"{self.header}\n\n{markdown(self.records)}"),
    ):
      with open(path + ".tmp", "w") as f:
        f.write(text)
      os.replace(path + ".tmp", path)


# A unit's seconds before one of its kind has run, compilations included: guesses for an
# H100 (--tiny: for a 2-core CPU).
ESTIMATES = dict(check=60, step=30, cohort=40, amplification=75, epoch=90, concurrent=60)
TINY_ESTIMATES = dict(check=30, step=10, cohort=10, amplification=20, epoch=20, concurrent=20)


def run_units(units, records: Records, budget_s=None, estimates=ESTIMATES, clock=time.monotonic):
  """Runs each ``(unit, kind, measure)`` not yet in ``records`` (``measure()`` returns its
  records), in order; stops before a unit that would pass ``budget_s`` seconds from the
  start, by its kind's last time (else ``estimates[kind]``). Returns the units it left."""
  start, seconds, left = clock(), dict(estimates), []
  for unit, kind, measure in units:
    if records.done(unit):
      print(f"{unit}: already in {records.path}", flush=True)
      continue
    elapsed = clock() - start
    if left or (budget_s is not None and elapsed + seconds[kind] > budget_s):
      if not left:
        print(
          f"--budget_s {budget_s:g}: stopping before {unit} (about {seconds[kind]:.0f} s, "
          f"{elapsed:.0f} s gone)",
          flush=True,
        )
      left.append(unit)
      continue
    began = clock()
    records.add(unit, measure())
    seconds[kind] = clock() - began
    print(f"{unit}: {seconds[kind]:.1f} s", flush=True)
  return left


def check_unit(check) -> list:
  print(check.line(), flush=True)
  return [dict(name=check.name, passed=check.passed, numbers=check.numbers)]


def units(args, sizes, records: Records, checks_root: str) -> list:
  """The suite's ``(unit, kind, measure)`` in order of value."""
  model, dtype, batch_size = sizes["main"]
  steps, repeats = sizes["steps"], sizes["repeats"]
  main = dict(model=model, dtype=dtype, batch_size=batch_size)
  data_sizes = (sizes["train_images"], sizes["test_images"])
  alone = os.path.join(checks_root, "alone0")
  memory_gib = args.cohort_memory_gib or sizes.get("cohort_memory_gib")

  def auto():
    check, _ = gpu_checks.cohort_auto(model, dtype, batch_size, steps, data_sizes[0], memory_gib)
    return check_unit(check)

  out = [
    ("check cohort", "check", lambda: check_unit(
      gpu_checks.cohort_equals_alone(checks_root, sizes["check_images"]))),
    ("check nan", "check", lambda: check_unit(gpu_checks.nan_stays_its_own(
      model, dtype, batch_size, steps, sizes["nan_members"]))),
    ("check loop", "check", lambda: check_unit(
      gpu_checks.loop_equals_one_step_per_call(checks_root, sizes["check_images"], alone))),
    ("check auto", "check", auto),
    ("check resume", "check", lambda: check_unit(gpu_checks.killed_run_resumes(checks_root))),
  ]  # fmt: skip

  def step(model, dtype, batch_size):
    compile_seconds, rate = step_throughput(model, dtype, batch_size, steps, repeats)
    record = dict(name="step", model=model, dtype=dtype, batch_size=batch_size)
    return [dict(record, images_per_second=rate, compile_seconds=compile_seconds, steps=steps)]

  out.append((f"step {model} {dtype} {batch_size}", "step", lambda: step(*sizes["main"])))

  def cohort_size(members):
    if members == "largest":
      found = records.done("check auto")
      members = found[0]["numbers"]["K"] if found else None
      if not members or members in sizes["cohorts"]:
        print(f"cohort, largest: K {members} (--cohort auto) timed already or unknown", flush=True)
        return []
    alone_rate = records.done(f"step {model} {dtype} {batch_size}")
    compile_seconds, rate = cohort_throughput(model, dtype, batch_size, steps, repeats, members)
    gc.collect()
    record = dict(name=f"cohort x{members}", **main, images_per_second=rate, members=members)
    record.update(per_run=rate / members, compile_seconds=compile_seconds)
    if alone_rate:
      record["vs_alone"] = rate / members / alone_rate[0]["images_per_second"]
    return [record]

  for members in (*sizes["cohorts"], "largest"):
    out.append((f"cohort x{members}", "cohort", lambda m=members: cohort_size(m)))

  def amplification():
    best = amplification_overhead(model, dtype, batch_size, steps, repeats)
    return [
      dict(
        name=f"amplification {name}, {epoch}",
        **main,
        images_per_second=batch_size / times[epoch],
        time_ratio=times[epoch] / best["none"][epoch],
      )
      for name, times in best.items()
      for epoch in ("analysis", "amplified")
    ]

  def epoch():
    row, extra = epoch_time(model, dtype, batch_size, data_sizes, args.image_folder)
    record = dict(name="epoch", **main, images_per_second=row["images_per_second"])
    record.update(epoch_seconds=row["epoch_seconds"], compile_seconds=extra)
    return [dict(record, data=args.image_folder or "synthetic")]

  out += [("amplification", "amplification", amplification), ("epoch", "epoch", epoch)]
  for config in sizes["step"]:
    if config != sizes["main"]:
      out.append((f"step {' '.join(map(str, config))}", "step", lambda c=config: step(*c)))

  def one_per_call():
    _, rate = step_throughput(model, dtype, batch_size, steps, repeats, per_dispatch=1)
    return [dict(name="step, 1 per call", **main, images_per_second=rate, steps_per_dispatch=1)]

  def concurrent_runs(n):
    rates = concurrent(n, model, dtype, batch_size, steps, repeats, args.out)
    return [dict(name=f"concurrent x{n}", **main, images_per_second=sum(rates), processes=n)]

  out.append(("step, 1 per call", "step", one_per_call))
  for n in sizes["processes"]:
    out.append((f"concurrent x{n}", "concurrent", lambda n=n: concurrent_runs(n)))
  return out


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="folder for gpu_suite.json and gpu_suite.md")
  parser.add_argument("--tiny", action="store_true", help="small sizes (CPU, CI)")
  parser.add_argument("--image_folder", help="data for the epoch measurement")
  parser.add_argument("--budget_s", type=float, help="stop before a unit that would pass it")
  parser.add_argument(
    "--cohort_memory_gib", type=float, help="the auto check's memory (default: the GPU's)"
  )
  parser.add_argument("--worker", help=argparse.SUPPRESS)
  for flag, kind in (
    ("--model", str),
    ("--dtype", str),
    ("--batch_size", int),
    ("--steps", int),
    ("--repeats", int),
  ):
    parser.add_argument(flag, type=kind, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.worker:  # one of the concurrent processes
    _, rate = step_throughput(
      args.model, args.dtype, args.batch_size, args.steps, args.repeats, ready=args.worker
    )
    print(json.dumps(dict(images_per_second=rate)))
    return
  if not args.out:
    parser.error("--out is required")
  os.makedirs(args.out, exist_ok=True)
  os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(args.out, "xla_cache"))
  import jax

  sizes = TINY if args.tiny else FULL
  device = jax.devices()[0].device_kind
  header = f"{device} x{jax.device_count()}, JAX {jax.__version__}"
  print(header, flush=True)
  records = Records(args.out, device, header)
  checks_root = os.path.join(args.out, "checks")
  os.makedirs(checks_root, exist_ok=True)
  estimates = TINY_ESTIMATES if args.tiny else ESTIMATES
  left = run_units(units(args, sizes, records, checks_root), records, args.budget_s, estimates)
  print(f"{header}\n\n{markdown(records.records)}")
  if left:
    print(f"not measured (--budget_s {args.budget_s:g}): {', '.join(left)}")
  mine = [r for r in records.records if r.get("device") == device]
  failed = [r["name"] for r in mine if r.get("passed") is False]
  if failed:
    raise SystemExit(f"checks failed: {'; '.join(failed)}")


if __name__ == "__main__":
  main()
