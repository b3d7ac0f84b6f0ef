"""The launcher's ``--cohort K``: a sweep's runs grouped into cohorts, each trained as one
program (docs/sweeps.md); each cohort runs as the launcher again (:func:`options.relaunch`)."""

import os
import shlex
import sys

from gradamp_jax.sweeps import cluster, expansion, local, options


def run(args, runs, overrides):
  """``--cohort K``: the cohorts' commands printed, run here or submitted (or with
  ``--cohort_index``/``--cohort_runs`` one cohort trained here); their run names or jobs."""
  from gradamp_jax.training import cohort

  configs = expansion.member_configs(args, runs, overrides)
  if args.cohort_index is not None or args.cohort_runs is not None:
    return train_one(*_chosen(args, runs, configs), args.until_epoch)
  cohorts = cohort.groups(configs, args.cohort)
  names = [[runs[k]["name"] for k in c] for c in cohorts]
  relaunch = lambda i: options.relaunch(args, overrides, "--cohort_index", str(i))
  commands = [(f"cohort{i}", relaunch(i)) for i in range(len(cohorts))]
  if args.mode == "print":
    print("\n".join(shlex.join(c) for _, c in commands))
    return names
  print(f"{len(runs)} runs in {len(cohorts)} cohorts of at most {args.cohort}", flush=True)
  if args.mode == "slurm":
    jobs = cluster.submit_sweep(args, [shlex.join(c) for _, c in commands], "cohort")
    expansion.write_record(args, runs, cohorts=names, cohort_jobs=[j.job_id for j in jobs])
    return jobs
  expansion.write_record(args, runs, cohorts=names)
  logs = os.path.join(args.root, "logs")
  local.run_all(commands, "cohort", args.runs_per_device, logs, [", ".join(n) for n in names])
  return names


def _chosen(args, runs, configs):
  """The configs and workdirs of the cohort ``--cohort_runs`` (or ``--cohort_index``)."""
  from gradamp_jax.training import cohort

  if args.cohort_runs is not None:
    names = args.cohort_runs.split(",")
    unknown = sorted(set(names) - {r["name"] for r in runs})
    if unknown:
      raise SystemExit(f"--cohort_runs: no run {', '.join(unknown)} in this sweep")
    chosen = [k for k, r in enumerate(runs) if r["name"] in names]
  else:
    chosen = cohort.groups(configs, args.cohort)[args.cohort_index]
  return [configs[k] for k in chosen], [runs[k]["workdir"] for k in chosen]


def train_one(configs, workdirs, until_epoch: int | None = None):
  """Trains one cohort here; a failure is one line and the training program's exit status."""
  from gradamp_jax.training import preemption, train

  try:
    return train.train_cohort(configs, workdirs, until_epoch=until_epoch)
  except preemption.Preempted as e:
    print(e, file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_PREEMPTED)
  except (ValueError, OSError, train.NonFiniteError, train.WorkdirBusyError) as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    sys.exit(1)


def choose_size(args, runs, overrides) -> int:
  """``--cohort auto``: the smallest :func:`gradamp_jax.training.cohort.auto_size` over the
  sweep's models, datasets, batch sizes and precisions, with one line each."""
  os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the runs need the GPU
  if args.runs_per_device:  # what each of them may take (local.run_concurrently)
    os.environ["XLA_PYTHON_CLIENT_MEM_FRACTION"] = local.memory_fraction(args.runs_per_device)
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
  for config in expansion.member_configs(args, runs, overrides):
    key = (config.model, config.dataset, config.batch_size, config.half_precision)
    if key not in sizes:
      sizes[key], line = cohort.auto_size(config, capacity)
      print(line, flush=True)
  return min(sizes.values())
