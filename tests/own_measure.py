"""A config file that brings a measure of its own (docs/method.md §3): the mean absolute
gradient per weight, registered when the file is read, tracked beside G and G′ and selected
by. The package is not edited: every process that reads this file (a run, its fork, a
sweep's members) knows the measure.
"""

from configs import default
from gradamp_jax import measures

MEAN_ABS = measures.register(
  measures.Measure(
    "mean_abs",
    "mean |g|",
    sums=("abs_sum",),
    per_weight=True,
    value=lambda w: w.layer_means("abs_sum") / w.steps,
    reference="mean absolute gradient per weight",
  ),
  replace=True,  # a process may read the file more than once
)


def get_config():
  config = default.get_config()
  config.tracked_measures = ("G", "G_prime", "mean_abs")
  config.amplification.update(method="intelligent", measure="mean_abs", case=1, threshold=0.5)
  return config
