"""The launcher's ``--branch``: a sweep trained as trees (:mod:`gradamp_jax.sweeps.branching`,
docs/sweeps.md); each tree, or group of trees, runs as the launcher again (:func:`command`)."""

import os
import shlex
import subprocess
import time

from gradamp_jax import run_folder
from gradamp_jax.sweeps import cluster, expansion, local, options


def command(args, overrides, trees: list[int]) -> list[str]:
  """This launcher, training the trees ``trees`` here: a job's or a slot's command."""
  return options.relaunch(args, overrides, "--branch", "--tree", ",".join(map(str, trees)))


def run(args, runs, overrides):
  """``--branch``: local mode trains the trees (or trees ``--tree``) here; slurm mode submits
  one job per tree (with ``--cohort K``, per cohort of trees), each :func:`command`."""
  import jax

  jax.config.update("jax_platforms", "cpu")  # forks and replays only; leave accelerators be
  from gradamp_jax.sweeps import branching

  configs = expansion.member_configs(args, runs, overrides)
  members = [branching.Member(r["name"], c, r["workdir"]) for r, c in zip(runs, configs)]
  trees = branching.roots(members)
  jobs_trees = [[k] for k in range(len(trees))]  # what a job (or a slot) trains
  if args.cohort is not None:
    from gradamp_jax.training import cohort

    jobs_trees = cohort.groups([tree[0].config for tree in trees], args.cohort)
  if args.mode == "slurm":
    commands = [shlex.join(command(args, overrides, group)) for group in jobs_trees]
    jobs = cluster.submit_sweep(
      args, commands, "tree" if args.cohort is None else "cohort of trees"
    )
    expansion.write_record(args, runs, tree_jobs=[j.job_id for j in jobs], job_trees=jobs_trees)
    return jobs
  if args.runs_per_device:
    return run_trees_concurrently(args, runs, overrides, jobs_trees)
  return train_trees(args, runs, overrides, trees)


def train_trees(args, runs, overrides, trees) -> dict:
  """Trains the trees (or trees ``--tree``) here, one after another or with ``--cohort``
  level by level, and writes their record."""
  from gradamp_jax.sweeps import branching

  chosen = range(len(trees)) if args.tree is None else args.tree
  started, tree = time.time(), []
  log = lambda line: print(f"  {line}", flush=True)
  train_segments = segment_trainer(args, runs, overrides)
  if args.cohort is not None:
    numbers = ", ".join(str(k + 1) for k in chosen)
    print(f"trees {numbers} of {len(trees)}, level by level", flush=True)
    tree = branching.run_forest([trees[k] for k in chosen], train_segments, log=log)
  else:
    for k in chosen:
      print(f"tree {k + 1}/{len(trees)}: {len(trees[k])} runs", flush=True)
      tree += branching.run_forest([trees[k]], train_segments, log=log)
  counts = branching.count_epochs(tree, [m for k in chosen for m in trees[k]])
  branch = dict(tree=tree, **counts, seconds=round(time.time() - started, 1))
  name = run_folder.sweep_record(None if args.tree is None else args.tree[0])
  return write_record(args, runs, name, len(chosen), branch)


def segment_trainer(args, runs, overrides):
  """``train_segments(segments)`` for :func:`~gradamp_jax.sweeps.branching.run_forest`: each
  segment in a process of its own, or with ``--cohort K`` as cohorts."""
  run_commands = {r["name"]: shlex.split(r["command"]) for r in runs}

  def train(names: list[str], until_epoch: int):
    argv = [*run_commands[names[0]], "--until_epoch", str(until_epoch)]
    if len(names) > 1:
      which = ["--cohort_runs", ",".join(names), "--until_epoch", str(until_epoch)]
      argv = options.relaunch(args, overrides, *which)
    if subprocess.call(argv) != 0:
      raise SystemExit(
        f"{', '.join(names)}: training to epoch {until_epoch} failed; run the same "
        "command again to resume"
      )

  def train_segments(segments):
    if args.cohort is None:
      for member, until in segments:
        train([member.name], until)
      return
    from gradamp_jax.training import cohort

    for until in sorted({u for _, u in segments}):
      ending = [m for m, u in segments if u == until]
      for group in cohort.groups([m.config for m in ending], args.cohort):
        train([ending[k].name for k in group], until)

  return train_segments


def write_record(args, runs, name: str, num_trees: int, branch: dict) -> dict:
  """Writes ``ROOT/NAME``: the sweep's runs and ``branch`` (the tree and epoch counts)."""
  record = expansion.write_record(args, runs, name, branch=branch)
  print(
    f"trained {branch['epochs_trained']} epochs for {num_trees} tree(s) whose runs "
    f"total {branch['epochs_members']} epochs",
    flush=True,
  )
  return record


def run_trees_concurrently(args, runs, overrides, jobs_trees: list[list[int]]) -> dict:
  """``--branch --runs_per_device N``: each group of trees in a slot of its own; their
  records merged into ``ROOT/sweep.json``."""
  started = time.time()
  commands = [(f"tree{group[0]}", command(args, overrides, group)) for group in jobs_trees]
  local.run_all(commands, "tree", args.runs_per_device, os.path.join(args.root, "logs"))
  records = [run_folder.read_json(args.root, run_folder.sweep_record(g[0])) for g in jobs_trees]
  parts = [record["branch"] for record in records]
  branch = dict(tree=[node for part in parts for node in part["tree"]])
  branch.update({k: sum(p[k] for p in parts) for k in ("epochs_trained", "epochs_members")})
  branch["seconds"] = round(time.time() - started, 1)
  return write_record(args, runs, run_folder.SWEEP, sum(map(len, jobs_trees)), branch)
