"""A cohort of K runs against the same K runs one after the other, side by side.

    python benchmarks/cohort_vs_runs.py --image_folder ~/data/cifar10-jpg --members 4

Trains the quickstart (``configs/quickstart.py``, 3 epochs) on a slice of the training
split, seeds 0 .. K-1: once as K runs in sequence (``train_and_evaluate``),
once as one cohort (``train_cohort``), the two taking turns ``--repeats`` times, each in
fresh folders, compilations included (nothing is cached between them). Prints each wall
time, the ratio cohort / runs, and whether each member's final metrics equal its run
alone's (on a CPU a cohort trains each member with its run's own program).
"""

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # noqa: E402
from gradamp_jax import run_folder  # noqa: E402
from gradamp_jax.training import cohort, train  # noqa: E402


def configs_and_workdirs(args, root: str):
  config = quickstart.get_config()
  config.image_folder = args.image_folder
  config.train_split = args.train_split
  seeds = ",".join(str(k) for k in range(args.members))
  return cohort.members_of(config, root, [f"seed={seeds}"])


def timed(name: str, configs, alone, members) -> float:
  start = time.perf_counter()
  with contextlib.redirect_stdout(io.StringIO()):
    if name == "runs":
      for config, workdir in zip(configs, alone):
        train.train_and_evaluate(config, workdir)
    else:
      train.train_cohort(configs, members)
  return time.perf_counter() - start


def final_rows(workdirs):
  rows = [run_folder.read_rows(w, run_folder.METRICS)[-1] for w in workdirs]
  return [{k: v for k, v in r.items() if k not in run_folder.TIMING_FIELDS} for r in rows]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--image_folder", required=True, help="CIFAR-10 as an image folder")
  parser.add_argument("--train_split", default="train[:5%]")
  parser.add_argument("--members", type=int, default=4)
  parser.add_argument("--repeats", type=int, default=2)
  args = parser.parse_args()
  times = {"runs": [], "cohort": []}
  for repeat in range(args.repeats):
    with tempfile.TemporaryDirectory() as runs_root, tempfile.TemporaryDirectory() as root:
      configs, alone = configs_and_workdirs(args, runs_root)
      _, members = configs_and_workdirs(args, root)
      order = ("runs", "cohort") if repeat % 2 == 0 else ("cohort", "runs")
      for name in order:
        times[name].append(timed(name, configs, alone, members))
        print(f"repeat {repeat}: {name} {times[name][-1]:.1f} s", flush=True)
      same = final_rows(alone) == final_rows(members)
      print(f"repeat {repeat}: every member's final metrics equal its run alone's: {same}")
  best = {name: min(t) for name, t in times.items()}
  print(
    f"{args.members} runs in sequence {best['runs']:.1f} s, a cohort of {args.members} "
    f"{best['cohort']:.1f} s (best of {args.repeats}): cohort / runs = "
    f"{best['cohort'] / best['runs']:.3f}"
  )


if __name__ == "__main__":
  main()
