"""The GPU suite's bookkeeping: what a rerun skips, and where a budget stops it."""

import json

import pytest

from benchmarks import gpu_suite


def _units(calls, kill_at=None):
  def measure(name):
    calls.append(name)
    if name == kill_at:
      raise KeyboardInterrupt  # the process killed while it measures
    return [dict(name=name, model="m", dtype="float32", batch_size=8, images_per_second=1.0)]

  return [(name, "step", lambda n=name: measure(n)) for name in ("a", "b", "c")]


def test_a_rerun_skips_what_is_written_and_completes_the_table(tmp_path, capsys):
  calls = []
  with pytest.raises(KeyboardInterrupt):
    gpu_suite.run_units(_units(calls, kill_at="b"), gpu_suite.Records(tmp_path, "card", "h"))
  assert [r["unit"] for r in json.loads((tmp_path / "gpu_suite.json").read_text())] == ["a"]
  calls.clear()
  records = gpu_suite.Records(tmp_path, "card", "h")  # the rerun reads what was written
  assert gpu_suite.run_units(_units(calls), records) == []
  assert calls == ["b", "c"] and "a: already in " in capsys.readouterr().out
  assert [r["unit"] for r in json.loads((tmp_path / "gpu_suite.json").read_text())] == list("abc")
  assert (tmp_path / "gpu_suite.md").read_text().count("| m | float32 | 8 | 1 |") == 3
  calls.clear()
  other = gpu_suite.Records(tmp_path, "another card", "h")  # another device measures anew
  assert gpu_suite.run_units(_units(calls), other) == [] and calls == list("abc")


def test_the_budget_stops_before_a_unit_that_would_pass_it(tmp_path, capsys):
  """Each unit takes 10 s of a fake clock; the first of its kind is estimated at 5 s, the
  next at the last one's 10 s: with 25 s, b starts at 10 s (20 < 25) and c, at 20 s, not."""
  now = [0.0]
  calls = []

  def measure(name):
    calls.append(name)
    now[0] += 10
    return [dict(name=name, model="m", dtype="float32", batch_size=8, images_per_second=1.0)]

  units = [(name, "step", lambda n=name: measure(n)) for name in "abc"]
  records = gpu_suite.Records(tmp_path, "card", "h")
  left = gpu_suite.run_units(units, records, 25, dict(step=5), clock=lambda: now[0])
  assert calls == ["a", "b"] and left == ["c"]
  assert "--budget_s 25: stopping before c (about 10 s, 20 s gone)" in capsys.readouterr().out
  assert [r["unit"] for r in json.loads((tmp_path / "gpu_suite.json").read_text())] == ["a", "b"]
