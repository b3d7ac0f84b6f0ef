"""Expands a config's sweep into runs and launches them.

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

``ROOT/sweep.json`` records every run's name, arguments and workdir (and SLURM job ids);
``python -m gradamp_jax.report ROOT --out DIR`` reads the runs' folders. SLURM jobs' logs are
in ``ROOT/slurm/``. A preempted or timed-out job checkpoints at a step boundary and is
requeued; the requeued job resumes (``gradamp_jax.sweeps.cluster``).
"""

import argparse
import importlib.util
import os
import shlex
import subprocess
import sys
import time

from gradamp_jax import run_folder

# How a launcher runs itself (a tree in its own process, or as a SLURM job).
_THIS_COMMAND = (sys.executable, "-m", "gradamp_jax.sweeps.launcher")


def load_config_module(path):
  sys.path.insert(0, os.getcwd())  # config files import their siblings as ``configs.*``
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SystemExit(f"--config {path}: the file defines no get_sweep(arg)")
  return module


def run_name(args: dict) -> str:
  return "-".join(f"{k}={v}" for k, v in args.items())


def expand(config_path: str, sweep_arg: str, root: str, overrides=()) -> list[dict]:
  """The sweep's runs: name, args, workdir and the command that runs each alone.

  ``overrides`` (``--config.FIELD=VALUE`` strings) are appended to every command.
  """
  runs = load_config_module(config_path).get_sweep(sweep_arg)
  out = []
  for args in runs:
    arg = ",".join(f"{k}={v}" for k, v in args.items())
    workdir = os.path.join(root, run_name(args))
    command = [
      sys.executable,
      "-m",
      "gradamp_jax.main",
      "--config",
      f"{config_path}:{arg}",
      "--workdir",
      workdir,
      *overrides,
    ]
    out.append(dict(name=run_name(args), args=args, workdir=workdir, command=shlex.join(command)))
  return out


def visible_gpus() -> list[str]:
  """The GPU ids to hand out: ``$CUDA_VISIBLE_DEVICES`` if set, else those ``nvidia-smi -L``
  lists; empty on a machine without GPUs."""
  if "CUDA_VISIBLE_DEVICES" in os.environ:
    return [
      d.strip()
      for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",")
      if d.strip() and d.strip() != "-1"
    ]
  try:
    listing = subprocess.run(
      ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60
    ).stdout
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [
    str(i) for i, _ in enumerate(line for line in listing.splitlines() if line.startswith("GPU "))
  ]


def run_concurrently(commands, per_device: int, devices: list[str], log_dir: str) -> list[str]:
  """Runs ``commands`` (``(name, argv)`` pairs), ``per_device`` at a time on each of
  ``devices`` (GPU ids; empty: this machine as it is), in order as slots free up.

  Each process sees only its GPU (``CUDA_VISIBLE_DEVICES``) and may take 0.9/``per_device``
  of its memory (``XLA_PYTHON_CLIENT_MEM_FRACTION``); its output goes to
  ``log_dir/NAME.log``. Returns the names of the commands that failed.
  """
  os.makedirs(log_dir, exist_ok=True)
  free = [(device, k) for device in (devices or [None]) for k in range(per_device)]
  pending, running, failed = list(commands), {}, []
  while pending or running:
    while pending and free:
      (name, argv), slot = pending.pop(0), free.pop(0)
      env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=f"{0.9 / per_device:.3f}")
      if slot[0] is not None:
        env["CUDA_VISIBLE_DEVICES"] = slot[0]
      log = open(os.path.join(log_dir, f"{name}.log"), "a")
      where = f"GPU {slot[0]}" if slot[0] is not None else "this machine"
      print(f"started {name} on {where} (log: {log.name})", flush=True)
      process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
      running[process] = name, slot, log
    time.sleep(0.2)
    for process in [p for p in running if p.poll() is not None]:
      name, slot, log = running.pop(process)
      log.close()
      free.append(slot)
      if process.returncode:
        failed.append(name)
      print(
        f"{'finished' if not process.returncode else f'FAILED ({process.returncode})'} {name}",
        flush=True,
      )
  return failed


def parse_args(argv=None):
  """The launcher's arguments and the ``--config.FIELD=VALUE`` overrides for every run."""
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--config", required=True, help="config file with get_sweep(arg)")
  parser.add_argument("--sweep", default="", help="argument of get_sweep, key=value,...")
  parser.add_argument("--root", required=True, help="parent folder of the runs' workdirs")
  parser.add_argument("--mode", choices=("print", "local", "slurm"), default="print")
  parser.add_argument("--partition", default=None, help="slurm: partition")
  parser.add_argument("--time_min", type=int, default=24 * 60, help="slurm: minutes per job")
  parser.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per run")
  parser.add_argument("--cpus", type=int, default=None, help="slurm: CPUs per run")
  parser.add_argument("--mem_gb", type=float, default=None, help="slurm: memory per run")
  parser.add_argument(
    "--cluster",
    default="slurm",
    choices=("slurm", "local"),
    help="slurm: submitit's executor (local: run the jobs on this machine)",
  )
  parser.add_argument(
    "--branch",
    action="store_true",
    help="train runs that are the same computation once and fork them where "
    "their selections differ (gradamp_jax.sweeps.branching); with slurm, "
    "one job per tree",
  )
  parser.add_argument(
    "--tree",
    type=_tree_numbers,
    default=None,
    help="with --branch: run only these trees (0-based, comma-separated; what a slurm job runs)",
  )
  parser.add_argument(
    "--runs_per_device",
    type=int,
    default=None,
    help="local: run this many runs (with --branch: trees) at once on each "
    "visible GPU (on a machine without GPUs: at once here); logs in "
    "ROOT/logs/",
  )
  _add_cohort_args(parser)
  args, overrides = parser.parse_known_args(argv)
  _check_args(parser, args, overrides)
  return args, overrides


def _add_cohort_args(parser) -> None:
  """The cohort arguments of :func:`parse_args`."""
  parser.add_argument(
    "--cohort",
    type=_cohort_size,
    default=None,
    help="train runs that differ only in seed or the selection rule's numbers K at a time "
    "as one program (gradamp_jax.training.cohort); with slurm, one job per cohort; with "
    "--branch, each level's segments of one program as cohorts (and slurm: one job per "
    "cohort of trees); auto: the largest K that fits the GPU (or --cohort_memory_gib), from "
    "XLA's planned memory",
  )
  parser.add_argument(
    "--cohort_memory_gib",
    type=float,
    default=None,
    help="with --cohort auto: the memory a cohort may use (default: this machine's GPU's)",
  )
  parser.add_argument(
    "--cohort_index",
    type=int,
    default=None,
    help="with --cohort: train only this cohort (0-based; what a job or a slot runs)",
  )
  parser.add_argument(
    "--cohort_runs",
    default=None,
    help="with --cohort: train these runs (names, comma-separated) as one cohort (what a "
    "branched sweep's segment runs)",
  )
  parser.add_argument(
    "--until_epoch", type=int, default=None, help="with --cohort_runs: stop after this epoch"
  )


def _check_args(parser, args, overrides) -> None:
  """What the arguments need of each other (argparse's error, exit 2, otherwise)."""
  if args.cohort_memory_gib is not None and (args.cohort != "auto" or args.cohort_memory_gib <= 0):
    parser.error("--cohort_memory_gib: a positive number of GiB, with --cohort auto")
  if (args.cohort_index is not None or args.cohort_runs is not None) and args.cohort is None:
    parser.error("--cohort_index and --cohort_runs go with --cohort")
  if args.until_epoch is not None and args.cohort_runs is None:
    parser.error("--until_epoch goes with --cohort_runs")
  if args.tree is not None and not args.branch:
    parser.error("--tree goes with --branch")
  if args.runs_per_device is not None and (
    args.mode != "local" or args.runs_per_device < 1 or args.tree is not None
  ):
    parser.error(
      f"--runs_per_device {args.runs_per_device}: a positive number, with --mode "
      "local and without --tree"
    )
  bad = [o for o in overrides if not (o.startswith("--config.") and "=" in o)]
  if bad:
    parser.error(
      f"unrecognized arguments: {' '.join(bad)} (overrides applied to every run "
      "are written --config.FIELD=VALUE)"
    )


def _cohort_size(text: str) -> int | str:
  """``--cohort``'s value: a positive number of runs, or ``auto``."""
  if text == "auto":
    return text
  if not text.isdigit() or int(text) < 1:
    raise argparse.ArgumentTypeError(f"{text!r}: a positive number of runs, or auto")
  return int(text)


def choose_cohort_size(args, runs, overrides) -> int:
  """``--cohort auto``: the largest K that fits (:func:`gradamp_jax.training.cohort.auto_size`)
  for the sweep's first run of each model, dataset, batch size and precision (the fields
  that set a member's memory; the margin leaves room for the methods' differences), the
  smallest of them; one line each says why."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the runs need the GPU
  if args.runs_per_device:  # what each of them may take (run_concurrently)
    os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / args.runs_per_device:.3f}"
  import jax

  from gradamp_jax.training import cohort

  capacity = (args.cohort_memory_gib or 0) * 2**30
  if not capacity:
    stats = jax.devices()[0].memory_stats() if jax.default_backend() == "gpu" else None
    if not stats:
      raise SystemExit(
        f"--cohort auto: sizes a cohort for a GPU's memory; jax sees {jax.default_backend()} "
        "here: give --cohort K, or --cohort_memory_gib G (the memory of the jobs' GPUs)"
      )
    capacity = stats["bytes_limit"]
  sizes = {}
  for config in member_configs(args, runs, overrides):
    key = (config.model, config.dataset, config.batch_size, config.half_precision)
    if key not in sizes:
      sizes[key], line = cohort.auto_size(config, capacity)
      print(line, flush=True)
  return min(sizes.values())


def _tree_numbers(text: str) -> list[int]:
  """``--tree``'s value: tree numbers, comma-separated."""
  try:
    trees = [int(t) for t in text.split(",")]
  except ValueError:
    trees = []
  if not trees or min(trees) < 0:
    raise argparse.ArgumentTypeError(f"{text!r}: tree numbers from 0, comma-separated (0,3)")
  return trees


def write_record(args, runs: list[dict], name: str = run_folder.SWEEP, **more) -> dict:
  """Writes the sweep's record ``ROOT/NAME``: its config, sweep, runs and ``more``."""
  record = dict(config=args.config, sweep=args.sweep, runs=runs, **more)
  run_folder.write_json(args.root, name, record)
  return record


def main(argv=None):
  args, overrides = parse_args(argv)
  runs = expand(args.config, args.sweep, args.root, overrides)
  if args.cohort == "auto":
    args.cohort = choose_cohort_size(args, runs, overrides)
  os.makedirs(args.root, exist_ok=True)
  if args.tree is None and args.cohort_index is None and args.cohort_runs is None:
    write_record(args, runs)
  if args.cohort is not None and (not args.branch or args.cohort_runs is not None):
    return run_cohorts(args, runs, overrides)
  if args.branch and args.mode != "print":
    return run_branched(args, runs, overrides)
  if args.mode == "print":
    print("\n".join(r["command"] for r in runs))
    return None
  if args.mode == "slurm":
    jobs = submit_jobs(args, [r["command"] for r in runs])
    for run, job in zip(runs, jobs):
      run["job_id"] = job.job_id
    write_record(args, runs)
    print(
      f"submitted {len(jobs)} jobs: {', '.join(j.job_id for j in jobs)}; logs in "
      f"{os.path.join(args.root, 'slurm')}"
    )
    return jobs
  if args.runs_per_device:
    failed = run_concurrently(
      [(r["name"], shlex.split(r["command"])) for r in runs],
      args.runs_per_device,
      visible_gpus(),
      os.path.join(args.root, "logs"),
    )
  else:
    failed = []
    for i, run in enumerate(runs, 1):
      print(f"[{i}/{len(runs)}] {run['name']}", flush=True)
      if subprocess.call(shlex.split(run["command"])) != 0:
        failed.append(run["name"])
  if failed:
    raise SystemExit(f"{len(failed)} run(s) failed: {', '.join(failed)}")


# Words of sbatch's refusals and the option behind each.
_REFUSED_OPTIONS = (
  ("partition", "partition"),
  ("generic resource", "gpus"),
  ("gres", "gpus"),
  ("memory", "mem_gb"),
  ("time limit", "time_min"),
  ("processor", "cpus"),
  ("cpu", "cpus"),
)


def submit_jobs(args, commands: list[str]) -> list:
  """Submits ``commands`` as SLURM jobs with the sweep's options; when sbatch refuses them,
  exits with one line giving sbatch's reason and the option behind it."""
  import submitit

  from gradamp_jax.sweeps import cluster

  try:
    return cluster.submit(
      commands,
      os.path.join(args.root, "slurm", "%j"),
      cluster=args.cluster,
      partition=args.partition,
      time_min=args.time_min,
      gpus=args.gpus,
      cpus=args.cpus,
      mem_gb=args.mem_gb,
    )
  except submitit.core.utils.FailedJobError as e:
    raise SystemExit(refusal(str(e), args)) from None


def refusal(error: str, args) -> str:
  """One line from sbatch's error output: its first reason, and the option it points at."""
  lines = [line.removeprefix("sbatch: error: ").strip() for line in error.splitlines()]
  reason = next((line for line in lines if line), "sbatch failed")
  option = next((o for word, o in _REFUSED_OPTIONS if word in reason.lower()), None)
  hint = f" (--{option} {getattr(args, option)})" if option else ""
  return f"sweep: sbatch refused the jobs: {reason}{hint}"


def _tree_command(args, overrides, trees: list[int] | None = None) -> list[str]:
  """This launcher, training the trees here (or trees ``trees``): a job's or a slot's
  command."""
  me = [*_THIS_COMMAND, "--config", args.config, "--sweep", args.sweep, "--root", args.root]
  me += ["--mode", "local", "--branch"]
  me += [] if args.cohort is None else ["--cohort", str(args.cohort)]
  return me + ([] if trees is None else ["--tree", ",".join(map(str, trees))]) + list(overrides)


def member_configs(args, runs, overrides) -> list:
  """Each run's config, built here from the config file and the overrides."""
  from gradamp_jax.training import config_fields

  module = load_config_module(args.config)
  configs = []
  for run in runs:
    config = module.get_config(",".join(f"{k}={v}" for k, v in run["args"].items()))
    config_fields.apply_overrides(config, overrides)
    configs.append(config)
  return configs


def _cohort_command(args, overrides, *which: str) -> list[str]:
  """This launcher, training one cohort here (``which``: ``--cohort_index I``, or
  ``--cohort_runs NAMES --until_epoch E``): a job's, a slot's or a segment's command."""
  me = [*_THIS_COMMAND, "--config", args.config, "--sweep", args.sweep, "--root", args.root]
  return me + ["--mode", "local", "--cohort", str(args.cohort), *which, *overrides]


def run_cohorts(args, runs, overrides):
  """``--cohort K``: the runs grouped into cohorts (:func:`gradamp_jax.training.cohort.groups`);
  local mode trains them one after another, each in a process of its own (or
  ``--runs_per_device`` at a time), slurm mode submits one job per cohort. Each process
  runs this command with ``--cohort_index I``."""
  from gradamp_jax.training import cohort

  configs = member_configs(args, runs, overrides)
  if args.cohort_runs is not None:
    names = args.cohort_runs.split(",")
    unknown = sorted(set(names) - {r["name"] for r in runs})
    if unknown:
      raise SystemExit(f"--cohort_runs: no run {', '.join(unknown)} in this sweep")
    chosen = [k for k, r in enumerate(runs) if r["name"] in names]
    return train_one_cohort(
      [configs[k] for k in chosen], [runs[k]["workdir"] for k in chosen], args.until_epoch
    )
  cohorts = cohort.groups(configs, args.cohort)
  if args.cohort_index is not None:
    return train_one_cohort(
      [configs[k] for k in cohorts[args.cohort_index]],
      [runs[k]["workdir"] for k in cohorts[args.cohort_index]],
    )
  names = [[runs[k]["name"] for k in c] for c in cohorts]
  commands = [
    (f"cohort{i}", _cohort_command(args, overrides, "--cohort_index", str(i)))
    for i in range(len(cohorts))
  ]
  if args.mode == "print":
    print("\n".join(shlex.join(c) for _, c in commands))
    return names
  print(f"{len(runs)} runs in {len(cohorts)} cohorts of at most {args.cohort}", flush=True)
  if args.mode == "slurm":
    jobs = submit_jobs(args, [shlex.join(c) for _, c in commands])
    write_record(args, runs, cohorts=names, cohort_jobs=[j.job_id for j in jobs])
    print(f"submitted {len(jobs)} jobs (one per cohort): {', '.join(j.job_id for j in jobs)}")
    return jobs
  write_record(args, runs, cohorts=names)
  if args.runs_per_device:
    failed = run_concurrently(
      commands, args.runs_per_device, visible_gpus(), os.path.join(args.root, "logs")
    )
  else:
    failed = []
    for i, (name, command) in enumerate(commands, 1):
      print(f"[{i}/{len(commands)}] {name}: {', '.join(names[i - 1])}", flush=True)
      if subprocess.call(command) != 0:
        failed.append(name)
  if failed:
    raise SystemExit(f"{len(failed)} cohort(s) failed: {', '.join(failed)}; run again to resume")
  return names


def train_one_cohort(configs, workdirs, until_epoch: int | None = None):
  """Trains one cohort here; a failure is one line and the training program's exit status."""
  from gradamp_jax.training import cohort, preemption, train

  try:
    return cohort.train_cohort(configs, workdirs, until_epoch=until_epoch)
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_PREEMPTED)
  except (ValueError, OSError, train.NonFiniteError, train.WorkdirBusyError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


def run_branched(args, runs, overrides):
  """``--branch``: local mode trains the trees here (or trees ``--tree``); slurm mode
  submits one job per tree (with ``--cohort K``, per cohort of at most K trees whose
  trunks share a program), each running this command with ``--mode local --tree K,..``."""
  import jax

  jax.config.update("jax_platforms", "cpu")  # forks and replays only; leave accelerators be
  from gradamp_jax.sweeps import branching

  members = [
    branching.Member(run["name"], config, run["workdir"])
    for run, config in zip(runs, member_configs(args, runs, overrides))
  ]
  trees = branching.roots(members)
  jobs_trees = tree_groups(args, trees)
  if args.mode == "slurm":
    commands = [shlex.join(_tree_command(args, overrides, group)) for group in jobs_trees]
    jobs = submit_jobs(args, commands)
    tree_jobs = [j.job_id for j in jobs]
    write_record(args, runs, tree_jobs=tree_jobs, job_trees=jobs_trees)
    what = "tree" if args.cohort is None else "cohort of trees"
    print(f"submitted {len(jobs)} jobs (one per {what}): {', '.join(tree_jobs)}")
    return jobs
  if args.runs_per_device:
    return run_trees_concurrently(args, runs, overrides, jobs_trees)
  return train_trees(args, runs, overrides, trees)


def tree_groups(args, trees) -> list[list[int]]:
  """The trees a job (or a slot) trains: one each, or with ``--cohort K`` cohorts of at
  most K trees whose trunks share a program (their first segments train as one)."""
  if args.cohort is None:
    return [[k] for k in range(len(trees))]
  from gradamp_jax.training import cohort

  return cohort.groups([tree[0].config for tree in trees], args.cohort)


def train_trees(args, runs, overrides, trees) -> dict:
  """Trains the trees (or trees ``--tree``) here: one after another, or with ``--cohort``
  level by level, each level's segments of one program as cohorts. Writes their record."""
  from gradamp_jax.sweeps import branching

  chosen = range(len(trees)) if args.tree is None else args.tree
  started, tree = time.time(), []
  log = lambda line: print(f"  {line}", flush=True)  # noqa: E731
  train_segments = segment_trainer(args, runs, overrides)
  if args.cohort is not None:
    print(
      f"trees {', '.join(str(k + 1) for k in chosen)} of {len(trees)}, level by level", flush=True
    )
    tree = branching.run_forest([trees[k] for k in chosen], train_segments, log=log)
  else:
    for k in chosen:
      print(f"tree {k + 1}/{len(trees)}: {len(trees[k])} runs", flush=True)
      tree += branching.run_forest([trees[k]], train_segments, log=log)
  counts = branching.count_epochs(tree, [m for k in chosen for m in trees[k]])
  return write_branch_record(
    args,
    runs,
    run_folder.sweep_record(None if args.tree is None else args.tree[0]),
    len(chosen),
    dict(tree=tree, **counts, seconds=round(time.time() - started, 1)),
  )


def segment_trainer(args, runs, overrides):
  """``train_segments(segments)`` for :func:`~gradamp_jax.sweeps.branching.run_forest`:
  each ``(member, until_epoch)`` trained in a process of its own, or with ``--cohort K``
  the segments that end at one epoch and share a program as cohorts of at most K."""
  command = {r["name"]: shlex.split(r["command"]) for r in runs}

  def train(names: list[str], until_epoch: int):
    argv = [*command[names[0]], "--until_epoch", str(until_epoch)]
    if len(names) > 1:
      which = ["--cohort_runs", ",".join(names), "--until_epoch", str(until_epoch)]
      argv = _cohort_command(args, overrides, *which)
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


def write_branch_record(args, runs, name: str, num_trees: int, branch: dict) -> dict:
  """Writes ``ROOT/NAME``: the sweep's runs and ``branch`` (the tree and epoch counts)."""
  record = write_record(args, runs, name, branch=branch)
  print(
    f"trained {branch['epochs_trained']} epochs for {num_trees} tree(s) whose runs "
    f"total {branch['epochs_members']} epochs",
    flush=True,
  )
  return record


def run_trees_concurrently(args, runs, overrides, jobs_trees: list[list[int]]) -> dict:
  """``--branch --runs_per_device N``: each group of trees is this command with ``--tree
  K,..`` in a slot of :func:`run_concurrently`; their records are merged into
  ``ROOT/sweep.json``."""
  started = time.time()
  failed = run_concurrently(
    [(f"tree{group[0]}", _tree_command(args, overrides, group)) for group in jobs_trees],
    args.runs_per_device,
    visible_gpus(),
    os.path.join(args.root, "logs"),
  )
  if failed:
    raise SystemExit(
      f"{', '.join(failed)} failed (logs in {args.root}/logs); run the same command again to resume"
    )
  parts = [
    run_folder.read_json(args.root, run_folder.sweep_record(group[0]))["branch"]
    for group in jobs_trees
  ]
  num_trees = sum(len(group) for group in jobs_trees)
  branch = dict(
    tree=[node for part in parts for node in part["tree"]],
    epochs_trained=sum(p["epochs_trained"] for p in parts),
    epochs_members=sum(p["epochs_members"] for p in parts),
    seconds=round(time.time() - started, 1),
  )
  return write_branch_record(args, runs, run_folder.SWEEP, num_trees, branch)


if __name__ == "__main__":
  main()
