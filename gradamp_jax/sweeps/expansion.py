"""A config's sweep as runs: their names, commands, workdirs and configs; the sweep's record.

A config file's ``get_sweep(arg)`` lists the runs' config arguments; :func:`expand` gives
each run a name, a workdir under the sweep's root and the command that trains it alone;
:func:`member_configs` builds the runs' configs here; :func:`write_record` writes
``ROOT/sweep.json`` (or a part's record) for the report and for resuming.
"""

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


def run_name(args: dict) -> str:
  """A run's name: its config arguments, ``key=value-key=value``."""
  return "-".join(f"{k}={v}" for k, v in args.items())


def config_arg(args: dict) -> str:
  """A run's argument of its config file: ``key=value,key=value``."""
  return ",".join(f"{k}={v}" for k, v in args.items())


def expand(config_path: str, sweep_arg: str, root: str, overrides=()) -> list[dict]:
  """The sweep's runs: name, args, workdir and the command that runs each alone.

  ``overrides`` (``--config.FIELD=VALUE`` strings) are appended to every command.
  """
  runs = load_config_module(config_path).get_sweep(sweep_arg)
  out = []
  for args in runs:
    workdir = os.path.join(root, run_name(args))
    command = [
      sys.executable,
      "-m",
      "gradamp_jax.main",
      "--config",
      f"{config_path}:{config_arg(args)}",
      "--workdir",
      workdir,
      *overrides,
    ]
    out.append(dict(name=run_name(args), args=args, workdir=workdir, command=shlex.join(command)))
  return out


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
  """Writes the sweep's record ``ROOT/NAME``: its config, sweep, runs and ``more``."""
  record = dict(config=args.config, sweep=args.sweep, runs=runs, **more)
  run_folder.write_json(args.root, name, record)
  return record
