"""The speed figures of BENCHMARKS.md in one command, for a GPU (or, with --tiny, a CPU).

    python benchmarks/gpu_suite.py --out OUT [--image_folder ~/data/cifar10-jpg] [--tiny]

Writes ``OUT/gpu_suite.json`` (a list of records, each with ``name``, ``model``, ``dtype``,
``batch_size``, ``images_per_second`` and what else it measured) and ``OUT/gpu_suite.md``
(the same as a markdown table), and prints the table. It measures, on the first device:

* ``step``: training images/s of the training program's compiled chunk of steps (data on
  the device as uint8, augmentation in the step, donated state, amplification ``none`` with
  directionality tracking as in every run; ``steps`` steps per call) for resnet18 in float32
  and bfloat16 at batch 128 and 512, and resnet20, vgg19 and resnet50 in bfloat16 at batch
  128; ``compile_seconds`` is the first call. ``step, 1 per call`` is the main model with one
  step per call (``steps_per_dispatch=1``);
* ``epoch``: the training program itself (``train.train_and_evaluate``) for two epochs of
  resnet18, bfloat16, batch 128: the second epoch's seconds, evaluation included, and its
  training images/s, input pipeline included; ``compile_seconds`` is the first epoch's extra
  time. Data: ``--image_folder`` or, without it, random uint8 images of CIFAR-10's size;
* ``amplification``: the chunk with none, G and G′ amplification in the analysis epoch
  (accumulating) and while amplifying, variants taking turns; ``time_ratio``: step time
  over none's;
* ``concurrent``: aggregate images/s of 1, 2 and 4 processes training resnet18 (bfloat16,
  batch 128) at once on the device, each with ``XLA_PYTHON_CLIENT_MEM_FRACTION`` = 0.9/N,
  all starting their timed steps together (each reports its best of the repeats).

``--tiny`` runs the same code paths with resnet8, small batches and data, in about two
minutes on a 2-core CPU (CI runs it). Compilations are cached in ``OUT/xla_cache`` unless
``JAX_COMPILATION_CACHE_DIR`` is set, so the concurrent processes reuse the step's program.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

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
)
TINY = dict(
  step=[("resnet8", "float32", 8), ("resnet8", "bfloat16", 8), ("resnet8", "float32", 16)],
  main=("resnet8", "float32", 8),
  steps=3,
  repeats=2,
  train_images=128,
  test_images=64,
  processes=(1, 2),
)


def base_config(model, dtype, batch_size):
  from configs import default

  config = default.get_config()
  config.model, config.batch_size = model, batch_size
  config.half_precision = dtype == "bfloat16"
  config.phases = ((1, 0.1, 0, 1), (3, 0.1, 1, 2))
  config.amplification.method = "none"
  return config


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
  return compile_seconds, steps * batch_size / best


def epoch_time(model, dtype, batch_size, sizes, image_folder):
  """Two epochs of the training program; the second epoch's row, and the first's extra."""
  import numpy as np

  from benchmarks.harness import synthetic_dataset
  from gradamp_jax import run_folder
  from gradamp_jax.training import data as data_lib
  from gradamp_jax.training import train

  config = base_config(model, dtype, batch_size)
  config.phases = ((2, 0.1, 0, 1),)
  load = data_lib.load
  if image_folder:
    config.image_folder = image_folder
  else:
    dataset = synthetic_dataset(*sizes)
    keep = [np.arange(len(dataset.train), dtype=np.int32)]
    # This benchmark's data source, not a file.
    data_lib.load = lambda configs: data_lib.MembersData(dataset.train, [dataset], keep)
  try:
    with tempfile.TemporaryDirectory() as workdir:
      train.train_and_evaluate(config, workdir)
      first, second = run_folder.read_rows(workdir, run_folder.METRICS)
  finally:
    data_lib.load = load
  return second, first["epoch_seconds"] - second["epoch_seconds"]


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
  lines = ["| name | model | dtype | batch | images/s | more |", "|---|---|---|---:|---:|---|"]
  for r in records:
    more = ", ".join(
      f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
      for k, v in r.items()
      if k not in ("name", "model", "dtype", "batch_size", "images_per_second", "device")
    )
    lines.append(
      f"| {r['name']} | {r['model']} | {r['dtype']} | {r['batch_size']} | "
      f"{r['images_per_second']:,.0f} | {more} |"
    )
  return "\n".join(lines) + "\n"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", help="folder for gpu_suite.json and gpu_suite.md")
  parser.add_argument("--tiny", action="store_true", help="small sizes (CPU, CI)")
  parser.add_argument("--image_folder", help="data for the epoch measurement")
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
  print(f"{device} x{jax.device_count()}, JAX {jax.__version__}", flush=True)
  records = []

  def add(**record):
    record = dict(record, device=device)
    records.append(record)
    print(json.dumps(record), flush=True)
    with open(os.path.join(args.out, "gpu_suite.json"), "w") as f:
      json.dump(records, f, indent=2)

  for model, dtype, batch_size in sizes["step"]:
    compile_seconds, rate = step_throughput(
      model, dtype, batch_size, sizes["steps"], sizes["repeats"]
    )
    add(
      name="step",
      model=model,
      dtype=dtype,
      batch_size=batch_size,
      images_per_second=rate,
      compile_seconds=compile_seconds,
      steps_per_dispatch=sizes["steps"],
    )
  model, dtype, batch_size = sizes["main"]
  _, rate = step_throughput(
    model, dtype, batch_size, sizes["steps"], sizes["repeats"], per_dispatch=1
  )
  add(
    name="step, 1 per call",
    model=model,
    dtype=dtype,
    batch_size=batch_size,
    images_per_second=rate,
    steps_per_dispatch=1,
  )
  row, extra = epoch_time(
    model, dtype, batch_size, (sizes["train_images"], sizes["test_images"]), args.image_folder
  )
  add(
    name="epoch",
    model=model,
    dtype=dtype,
    batch_size=batch_size,
    images_per_second=row["images_per_second"],
    epoch_seconds=row["epoch_seconds"],
    compile_seconds=extra,
    data=args.image_folder or "synthetic",
  )
  best = amplification_overhead(model, dtype, batch_size, sizes["steps"], sizes["repeats"])
  for name, times in best.items():
    for epoch in ("analysis", "amplified"):
      add(
        name=f"amplification {name}, {epoch}",
        model=model,
        dtype=dtype,
        batch_size=batch_size,
        images_per_second=batch_size / times[epoch],
        time_ratio=times[epoch] / best["none"][epoch],
      )
  for n in sizes["processes"]:
    rates = concurrent(n, model, dtype, batch_size, sizes["steps"], sizes["repeats"], args.out)
    add(
      name=f"concurrent x{n}",
      model=model,
      dtype=dtype,
      batch_size=batch_size,
      images_per_second=sum(rates),
      processes=n,
    )
  table = markdown(records)
  with open(os.path.join(args.out, "gpu_suite.md"), "w") as f:
    f.write(f"{device} x{jax.device_count()}, JAX {jax.__version__}\n\n{table}")
  print(table)


if __name__ == "__main__":
  main()
