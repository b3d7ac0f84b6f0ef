r"""Expands a config's sweep into runs and launches them.

    # list the commands (one per line: pipe into GNU parallel, xargs, your scheduler)
    python launch/sweep.py --config configs/paper.py \
        --sweep model=resnet18,dataset=cifar10,seeds=3 \
        --root runs/r18-c10 --mode print
    # run them one after another here (finished runs are skipped, interrupted ones resume)
    python launch/sweep.py ... --mode local
    # submit to SLURM with submitit: one job per run (a job array), requeued on preemption
    python launch/sweep.py ... --mode slurm --partition=gpu --time_min=720 --gpus=1
    # any --config.FIELD=VALUE is applied to every run (e.g. where the data lives)
    python launch/sweep.py ... --config.image_folder=~/data/cifar10-jpg

    # branched: train what the runs share once, fork where their selections differ
    python launch/sweep.py ... --mode local --branch
    # N runs (or, with --branch, trees) at once on each visible GPU, logs in ROOT/logs/
    python launch/sweep.py ... --mode local --runs_per_device 4
    # runs that differ only in seed or the rule's numbers: K at a time as one program
    python launch/sweep.py ... --mode local --cohort 8
    # branched, each level's segments of one program trained as cohorts of at most K
    python launch/sweep.py ... --mode local --branch --cohort 8

    # a part of the sweep: the runs whose method is none or all, of seed 0 (in any mode);
    # --list prints them (workdir and fields) and runs nothing
    python launch/sweep.py ... --only method=none,all --only seed=0 --list

``ROOT/sweep.json`` records the runs (and SLURM job ids; logs in ``ROOT/slurm/``); a preempted
job is requeued and resumes. ``python -m gradamp_jax.report ROOT --out DIR`` reads the runs.
"""

import os
import shlex

from gradamp_jax.sweeps import branched, cluster, cohorts, expansion, local, options


def main(argv=None):
  """``launch/sweep.py``: the sweep (the runs every ``--only`` keeps) listed (returns them), or
  recorded in ``ROOT/sweep.json`` and launched; returns what the part that ran returns."""
  args, overrides = options.parse(argv, description=__doc__)
  runs = expansion.expand(args.config, args.sweep, args.root, overrides)
  runs = expansion.select(runs, args.only)
  if args.list:  # each run's workdir and fields, one line each
    for run in runs:
      print(f"{run['workdir']}  {' '.join(f'{k}={v}' for k, v in run['args'].items())}")
    return runs
  if args.cohort == "auto":
    args.cohort = cohorts.choose_size(args, runs, overrides)
  os.makedirs(args.root, exist_ok=True)
  if args.tree is None and args.cohort_index is None and args.cohort_runs is None:
    expansion.write_record(args, runs)
  if args.cohort is not None and (not args.branch or args.cohort_runs is not None):
    return cohorts.run(args, runs, overrides)
  if args.branch and args.mode != "print":
    return branched.run(args, runs, overrides)
  return run_each(args, runs)


def run_each(args, runs):
  """Each run alone: its command printed, a SLURM job each (job ids in ``ROOT/sweep.json``),
  or run here (one after another, or ``--runs_per_device`` at once per GPU)."""
  if args.mode == "print":
    print("\n".join(r["command"] for r in runs))
    return None
  if args.mode == "slurm":
    spread = " --distributed" if args.nodes > 1 else ""  # one process per node
    jobs = cluster.submit_sweep(args, [r["command"] + spread for r in runs], "run")
    expansion.write_record(args, [dict(r, job_id=j.job_id) for r, j in zip(runs, jobs)])
    return jobs
  commands = [(r["name"], shlex.split(r["command"])) for r in runs]
  local.run_all(commands, "run", args.runs_per_device, os.path.join(args.root, "logs"))
  return None


if __name__ == "__main__":
  main()
