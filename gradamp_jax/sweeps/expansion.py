"""A config's sweep as runs: their names, commands, workdirs and configs; the sweep's record."""

import importlib.util
import os
import shlex
import sys

from gradamp_jax import run_folder


def load_config_module(path):
  """The config file ``path`` as a module; it must define ``get_sweep(arg)``."""
  sys.path.insert(0, os.getcwd())  # config files import their siblings as ``configs.*``
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, "get_sweep"):
    raise SystemExit(f"--config {path}: the file defines no get_sweep(arg)")
  return module


def config_arg(args: dict) -> str:
  """A run's argument of its config file: ``key=value,key=value``."""
  return ",".join(f"{k}={v}" for k, v in args.items())


def expand(config_path: str, sweep_arg: str, root: str, overrides=()) -> list[dict]:
  """The sweep's runs: name (its arguments, ``key=value-key=value``), args, workdir and the
  command that runs each alone, with the ``--config.FIELD=VALUE`` ``overrides``."""
  runs, program = [], [sys.executable, "-m", "gradamp_jax.main"]
  for args in load_config_module(config_path).get_sweep(sweep_arg):
    name = "-".join(f"{k}={v}" for k, v in args.items())
    config, workdir = f"{config_path}:{config_arg(args)}", os.path.join(root, name)
    command = [*program, "--config", config, "--workdir", workdir, *overrides]
    runs.append(dict(name=name, args=args, workdir=workdir, command=shlex.join(command)))
  return runs


def select(runs: list[dict], only) -> list[dict]:
  """The runs that every ``--only`` (``(FIELD, (V1, V2))``) keeps, in the sweep's order.

  >>> runs = [dict(args=dict(method="none", seed=s)) for s in (0, 1)]
  >>> [r["args"]["seed"] for r in select(runs, [("seed", ("1.0",))])]
  [1]

  Raises:
    SystemExit: one line naming the flag, for a field or value no run has, or a combination
      that keeps no run.
  """
  fields = list(dict.fromkeys(k for run in runs for k in run["args"]))
  kept, applied = runs, []
  for field, texts in only:
    flag = f"--only {field}={','.join(texts)}"
    if field not in fields:
      raise SystemExit(
        f"{flag}: the sweep's runs have no field {field}; their fields: {', '.join(fields)}"
      )
    unknown = [t for t in texts if not _keeps(runs, field, t)]
    if unknown:
      raise SystemExit(
        f"{flag}: no run of the sweep has {' or '.join(f'{field}={t}' for t in unknown)}; "
        f"{field} is one of {_values(runs, field)}"
      )
    left = [r for r in kept if any(_keeps([r], field, t) for t in texts)]
    if not left:
      among = _values(kept, field)
      among = f"among them {field} is one of {among}" if among else f"none of them has a {field}"
      raise SystemExit(f"{flag}: keeps none of the runs {' '.join(applied)} keeps; {among}")
    kept, applied = left, [*applied, flag]
  return kept


def _keeps(runs: list[dict], field: str, text: str) -> bool:
  """Whether a run of ``runs`` has ``field`` equal to ``text`` (read as the run's value)."""
  return any(field in run["args"] and _equals(run["args"][field], text) for run in runs)


def _equals(value, text: str) -> bool:
  """Whether ``text`` reads as ``value``: a bool as true/false, a number as a number."""
  if isinstance(value, bool):
    return text.lower() in (("true", "1", "yes") if value else ("false", "0", "no"))
  if isinstance(value, (int, float)):
    try:
      return float(text) == value
    except ValueError:
      return False
  return str(value) == text


def _values(runs: list[dict], field: str) -> str:
  """The values ``field`` takes in ``runs``, in their order (empty: no run has it)."""
  return ", ".join(dict.fromkeys(str(r["args"][field]) for r in runs if field in r["args"]))


def member_configs(args, runs, overrides) -> list:
  """Each run's config, built here from the config file and the overrides."""
  from gradamp_jax.training import config_fields

  module = load_config_module(args.config)
  configs = []
  for run in runs:
    config = module.get_config(config_arg(run["args"]))
    config_fields.apply_overrides(config, overrides)
    configs.append(config)
  return configs


def write_record(args, runs: list[dict], name: str = run_folder.SWEEP, **more) -> dict:
  """Writes the sweep's record ``ROOT/NAME``: its config, sweep, runs, ``only`` and ``more``."""
  record = dict(config=args.config, sweep=args.sweep, runs=runs)
  if getattr(args, "only", None):
    record["only"] = [f"{field}={','.join(values)}" for field, values in args.only]
  record.update(more)
  run_folder.write_json(args.root, name, record)
  return record
