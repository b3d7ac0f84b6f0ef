"""How many distinct layer selections a threshold grid makes on a run's real statistics.

    python benchmarks/distinct_selections.py RUN_DIR [--grid params_1]

Applies every rule of the paper's grid (G and G′ × cases 1 and 2 × the thresholds of
``configs/paper.py``; z-scores and rules of ``gradamp_jax.measures``) to the G and G′ that
RUN_DIR's ``directionality.jsonl`` recorded for the epoch its first selection analyses, and
counts the distinct sets of layers: the trajectories a branched sweep trains after that
point, against one per rule without branching. RUN_DIR must track directionality (the
default).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import gradamp_jax as ga  # noqa: E402
from configs import paper  # noqa: E402
from gradamp_jax import run_folder  # noqa: E402


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("run_dir")
  parser.add_argument("--grid", choices=sorted(paper.THRESHOLDS), default="params_1")
  args = parser.parse_args(argv)
  config = run_folder.read_json(args.run_dir, run_folder.CONFIG)
  layers = run_folder.read_json(args.run_dir, run_folder.RUN_INFO)["layers"]
  epoch = ga.selection_epochs(config["phases"], config["amplification"]["reselect_every"] or None)[
    0
  ]
  rows = {
    r["layer"]: r
    for r in run_folder.read_rows(args.run_dir, run_folder.DIRECTIONALITY)
    if r["epoch"] == epoch
  }
  eligible = jnp.asarray([layer["eligible"] for layer in layers])
  thresholds = paper.THRESHOLDS[args.grid]
  masks = {}
  for measure in ("G", "G_prime"):
    values = jnp.asarray(
      [
        np.nan if rows[entry["layer"]][measure] is None else rows[entry["layer"]][measure]
        for entry in layers
      ],
      jnp.float32,
    )
    normalized = ga.normalize(values, eligible)  # eqs. 6, 8
    for case in (1, 2):
      for threshold in thresholds:
        chosen = ga.select_layers(normalized, eligible, case=case, threshold=threshold)
        masks[(measure, case, threshold)] = np.asarray(chosen).tobytes()
  distinct = len(set(masks.values()))
  per_measure = {m: len({v for k, v in masks.items() if k[0] == m}) for m in ("G", "G_prime")}
  print(
    f"{args.run_dir}: {config['model']}, {len(layers)} layers, statistics of epoch "
    f"{epoch}, thresholds {thresholds[0]}-{thresholds[-1]} ({len(thresholds)})"
  )
  print(
    f"{len(masks)} rules make {distinct} distinct selections (G: {per_measure['G']}, "
    f"G': {per_measure['G_prime']}; the empty selection counts as one)"
  )
  return dict(rules=len(masks), distinct=distinct, **per_measure)


if __name__ == "__main__":
  main()
