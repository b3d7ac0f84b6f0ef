"""Config files' arguments and sweeps."""

import pytest

from configs import quickstart


def test_quickstart_sweep_pairs_every_method_on_the_same_seeds():
  runs = quickstart.get_sweep("seeds=2,thresholds=0.5+1.0")
  assert len(runs) == 2 * (3 + 2 * 2 * 2 * 2)
  for method in ("none", "all", "random", "intelligent", "matched_random"):
    assert {r["seed"] for r in runs if r["method"] == method} == {0, 1}
  measured = [
    (r["method"], r["measure"], r["case"], r["threshold"])
    for r in runs
    if r["seed"] == 0 and "measure" in r
  ]
  assert len(set(measured)) == 16
  assert {r["threshold"] for r in runs if "threshold" in r} == {0.5, 1.0}
  assert all(r["validation_fraction"] == 0.1 for r in runs)
  last = quickstart.get_config(",".join(f"{k}={v}" for k, v in runs[-1].items()))
  assert last.amplification.method == "matched_random" and last.seed == 1
  assert last.validation_fraction == 0.1 and last.model == "resnet8"


def test_quickstart_defaults_and_bad_thresholds():
  config = quickstart.get_config()
  assert config.amplification.method == "intelligent" and config.validation_fraction == 0.0
  assert config.phases == ((1, 0.1, 0, 1), (3, 0.02, 1, 2))
  with pytest.raises(ValueError, match="thresholds='a\\+1': expected numbers"):
    quickstart.get_sweep("thresholds=a+1")
