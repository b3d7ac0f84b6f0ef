"""The command lines' ``--help``: each names its program's own flags."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING_FLAGS = (
  "config",
  "workdir",
  "cohort",
  "until_epoch",
  "fork_from",
  "fork_epoch",
  "distributed",
  "coordinator_address",
  "num_processes",
  "process_id",
)
SWEEP_OPTIONS = (
  "config",
  "sweep",
  "root",
  "mode",
  "runs_per_device",
  "only",
  "list",
  "partition",
  "time_min",
  "gpus",
  "cpus",
  "mem_gb",
  "cluster",
  "branch",
  "tree",
  "cohort",
  "cohort_memory_gib",
  "cohort_index",
  "cohort_runs",
  "until_epoch",
)


def help_text(*command: str) -> str:
  done = subprocess.run(
    [sys.executable, *command, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120
  )
  assert "Traceback" not in done.stderr, done.stderr
  return done.stdout


def described(text: str, flag: str) -> bool:
  """Whether a line of ``text`` starts with ``--flag`` as a help's entry does: absl's
  ``--flag:`` or ``--[no]flag:``, argparse's ``--flag VALUE`` (its usage line does not)."""
  pattern = rf"^\s+--(\[no\])?{flag}\b[:\s]"
  return re.search(pattern, text, re.MULTILINE) is not None


@pytest.mark.parametrize(
  "command", [["-m", "gradamp_jax.main"], ["-m", "gradamp_jax.training.main"]]
)
def test_the_training_programs_help_lists_its_flags(command):
  text = help_text(*command)
  assert "--workdir DIR" in text  # the usage comes first
  missing = [f for f in TRAINING_FLAGS if not described(text, f)]
  assert not missing, f"--help does not describe {missing}:\n{text}"
  assert "Directory for outputs and checkpoints." in text  # a flag's help, not only its name
  assert not described(text, "xla_gpu_autotune_level")  # jax's own flags: --helpfull


def test_the_sweep_launchers_help_lists_its_options():
  text = help_text("launch/sweep.py")
  assert text.startswith("usage: sweep.py")
  missing = [o for o in SWEEP_OPTIONS if not described(text, o)]
  assert not missing, f"--help does not describe {missing}:\n{text}"
  assert "parent folder of the runs' workdirs" in text  # an option's help, not only its name
  assert "python launch/sweep.py ... --mode local --cohort 8" in text  # the examples


def test_the_check_catches_a_flag_that_is_only_named():
  assert described("  --workdir: Directory.\n", "workdir")
  assert described("  --[no]distributed: Call first.\n", "distributed")
  assert described("  --root ROOT           parent folder\n", "root")
  assert not described("usage: sweep.py [-h] --root ROOT\n", "root")
  assert not described("  --cohort_index I: ...\n", "cohort")


@pytest.mark.parametrize("value", ["auto", "8"])
def test_the_training_program_points_cohort_auto_and_k_to_the_sweep_launcher(tmp_path, value):
  done = subprocess.run(
    [sys.executable, "-m", "gradamp_jax.main", "--config", "configs/quickstart.py"]
    + ["--workdir", str(tmp_path / "run"), "--cohort", value],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
  (line,) = done.stderr.strip().splitlines()  # one line, naming the flag and where K lives
  assert line.startswith(f"error: --cohort '{value}': expected FIELD=V1,V2,...")
  assert "are the sweep launcher's: launch/sweep.py --cohort auto" in line
  assert not (tmp_path / "run").exists()
