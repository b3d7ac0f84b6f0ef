"""Running a sweep's commands on this machine: one after another, or several per GPU."""

import os
import subprocess
import time


def run_all(commands, what: str, per_device: int | None, log_dir: str, notes=None) -> None:
  """Runs ``commands`` (``(name, argv)`` pairs) one after another, or ``per_device`` at a time
  on each visible GPU (logs in ``log_dir``); exits with one line naming those that failed."""
  if per_device:
    failed = run_concurrently(commands, per_device, visible_gpus(), log_dir)
  else:
    failed = []
    for i, (name, argv) in enumerate(commands, 1):
      note = f": {notes[i - 1]}" if notes else ""
      print(f"[{i}/{len(commands)}] {name}{note}", flush=True)
      if subprocess.call(argv) != 0:
        failed.append(name)
  if failed:
    logs = f" (logs in {log_dir})" if per_device else ""
    raise SystemExit(
      f"{len(failed)} {what}(s) failed: {', '.join(failed)}{logs}; run the same command "
      "again to resume"
    )


def visible_gpus() -> list[str]:
  """The GPU ids to hand out: ``$CUDA_VISIBLE_DEVICES`` if set, else those ``nvidia-smi -L``
  lists; empty on a machine without GPUs."""
  if "CUDA_VISIBLE_DEVICES" in os.environ:
    ids = [d.strip() for d in os.environ["CUDA_VISIBLE_DEVICES"].split(",")]
    return [d for d in ids if d and d != "-1"]
  try:
    listing = subprocess.run(
      ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=60
    ).stdout
  except (OSError, subprocess.TimeoutExpired):
    return []
  return [str(i) for i in range(sum(line.startswith("GPU ") for line in listing.splitlines()))]


def run_concurrently(commands, per_device: int, devices: list[str], log_dir: str) -> list[str]:
  """Runs ``commands``, ``per_device`` at a time on each of ``devices`` (empty: this machine),
  each with its GPU's share of memory and its log ``log_dir/NAME.log``; returns the failed."""
  os.makedirs(log_dir, exist_ok=True)
  free = [(device, k) for device in (devices or [None]) for k in range(per_device)]
  pending, running, failed = list(commands), {}, []
  while pending or running:
    while pending and free:
      (name, argv), slot = pending.pop(0), free.pop(0)
      gpu = {} if slot[0] is None else dict(CUDA_VISIBLE_DEVICES=slot[0])
      env = dict(os.environ, XLA_PYTHON_CLIENT_MEM_FRACTION=memory_fraction(per_device), **gpu)
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
      status = f"FAILED ({process.returncode})" if process.returncode else "finished"
      print(f"{status} {name}", flush=True)
  return failed


def memory_fraction(per_device: int) -> str:
  """``XLA_PYTHON_CLIENT_MEM_FRACTION`` for one of ``per_device`` processes on a GPU."""
  return f"{0.9 / per_device:.3f}"
