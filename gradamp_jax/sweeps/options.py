"""The sweep launcher's command line: its arguments, and the command it runs itself with."""

import argparse
import sys


def parse(argv=None, description: str | None = None):
  """The launcher's arguments and the ``--config.FIELD=VALUE`` overrides for every run;
  ``description`` heads ``--help``."""
  parser = argparse.ArgumentParser(
    description=description, formatter_class=argparse.RawDescriptionHelpFormatter
  )
  group = parser.add_argument_group  # --help lists the groups in this order
  _add_sweep_args(parser, group("choosing runs"))
  _add_slurm_args(group("SLURM jobs (--mode slurm)"), group("branched sweeps"))
  _add_cohort_args(group("cohorts"))
  args, overrides = parser.parse_known_args(argv)
  _check_args(parser, args, overrides)
  return args, overrides


def relaunch(args, overrides, *which: str) -> list[str]:
  """This launcher in ``--mode local`` (with ``--cohort K`` if given) training the part
  ``which`` names (``--cohort_index I``, ``--branch --tree K``, ...): a job's, a slot's or a
  segment's command."""
  only = [a for field, values in args.only for a in ("--only", f"{field}={','.join(values)}")]
  me = [sys.executable, "-m", "gradamp_jax.sweeps.launcher", "--config", args.config]
  me += ["--sweep", args.sweep, "--root", args.root, *only, "--mode", "local"]
  cohort = [] if args.cohort is None else ["--cohort", str(args.cohort)]
  return [*me, *cohort, *which, *overrides]


def _add_sweep_args(parser, selection) -> None:
  """The sweep, where and how its runs go; ``selection``: a part of it, and listing it."""
  parser.add_argument("--config", required=True, help="config file with get_sweep(arg)")
  parser.add_argument("--sweep", default="", help="argument of get_sweep, key=value,...")
  parser.add_argument("--root", required=True, help="parent folder of the runs' workdirs")
  parser.add_argument(
    "--mode",
    choices=("print", "local", "slurm"),
    default="print",
    help="print the commands (default), run them here, or submit them to SLURM",
  )
  parser.add_argument(
    "--runs_per_device",
    type=int,
    help="local: run this many runs (with --branch: trees) at once on each visible GPU (on a "
    "machine without GPUs: at once here); logs in ROOT/logs/",
  )
  selection.add_argument(
    "--only",
    type=_selection,
    action="append",
    default=[],
    metavar="FIELD=V1,V2",
    help="keep only the runs whose FIELD (a key of the sweep's runs, as in their names) is "
    "one of these values, numbers compared as numbers (threshold=1 keeps threshold=1.0); "
    "repeatable: a run is kept when every --only keeps it; before --cohort and --branch "
    "group the runs, in every mode",
  )
  selection.add_argument(
    "--list",
    action="store_true",
    help="print the runs (with --only: the runs kept), one line each: its workdir and "
    "fields; then exit without running or recording anything",
  )


def _add_slurm_args(parser, branch) -> None:
  """What each SLURM job asks for; ``branch``: branched sweeps."""
  parser.add_argument("--partition", help="slurm: partition")
  parser.add_argument("--time_min", type=int, default=24 * 60, help="slurm: minutes per job")
  parser.add_argument("--gpus", type=int, default=1, help="slurm: GPUs per run")
  parser.add_argument("--cpus", type=int, help="slurm: CPUs per run")
  parser.add_argument("--mem_gb", type=float, help="slurm: memory per run")
  parser.add_argument(
    "--nodes",
    type=int,
    default=1,
    help="slurm: nodes per run, one process on each (--distributed: JAX's multi-process runtime "
    "from SLURM's environment, the batch split across them); --gpus and --cpus are per node",
  )
  parser.add_argument(
    "--cluster",
    default="slurm",
    choices=("slurm", "local"),
    help="slurm: submitit's executor (local: run the jobs on this machine)",
  )
  branch.add_argument(
    "--branch",
    action="store_true",
    help="train runs that are the same computation once and fork them where their selections "
    "differ (gradamp_jax.sweeps.branching); with slurm, one job per tree",
  )
  branch.add_argument(
    "--tree",
    type=_tree_numbers,
    help="with --branch: run only these trees (0-based, comma-separated; what a slurm job runs)",
  )


def _add_cohort_args(parser) -> None:
  parser.add_argument(
    "--cohort",
    type=_cohort_size,
    help="train runs that differ only in seed or the selection rule's numbers K at a time "
    "as one program (gradamp_jax.training.cohort); with slurm, one job per cohort; with "
    "--branch, each level's segments of one program as cohorts (and slurm: one job per "
    "cohort of trees); auto: the largest K that fits the GPU (or --cohort_memory_gib), from "
    "XLA's planned memory",
  )
  parser.add_argument(
    "--cohort_memory_gib",
    type=float,
    help="with --cohort auto: the memory a cohort may use (default: this machine's GPU's)",
  )
  parser.add_argument(
    "--cohort_index",
    type=int,
    help="with --cohort: train only this cohort (0-based; what a job or a slot runs)",
  )
  parser.add_argument(
    "--cohort_runs",
    help="with --cohort: train these runs (names, comma-separated) as one cohort (what a "
    "branched sweep's segment runs)",
  )
  parser.add_argument("--until_epoch", type=int, help="with --cohort_runs: stop after this epoch")


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
  if args.nodes != 1 and (args.nodes < 1 or args.mode != "slurm" or args.branch or args.cohort):
    parser.error(
      f"--nodes {args.nodes}: a positive number, with --mode slurm, without --branch and "
      "--cohort (a run over several nodes is one job of one run)"
    )
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


def _selection(text: str) -> tuple[str, tuple[str, ...]]:
  """``--only``'s value: ``FIELD=V1,V2``, as ``(FIELD, (V1, V2))``."""
  field, sep, values = text.partition("=")
  texts = tuple(v.strip() for v in values.split(","))
  if not sep or not field.strip() or not all(texts):
    raise argparse.ArgumentTypeError(
      f"{text!r}: expected FIELD=V1,V2 (a field of the sweep's runs and its values, "
      "e.g. method=none,intelligent)"
    )
  return field.strip(), texts


def _tree_numbers(text: str) -> list[int]:
  """``--tree``'s value: tree numbers, comma-separated."""
  try:
    trees = [int(t) for t in text.split(",")]
  except ValueError:
    trees = []
  if not trees or min(trees) < 0:
    raise argparse.ArgumentTypeError(f"{text!r}: tree numbers from 0, comma-separated (0,3)")
  return trees
