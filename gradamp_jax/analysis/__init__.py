"""Reading run folders, the report's statistics, its figures and the report itself.

The analysis reads files only: it never imports the training program (only the method's
measure and action definitions, for their labels and parameters), so it runs wherever the
run folders are (a laptop, a notebook), without accelerators.

* :mod:`~gradamp_jax.analysis.runs`: run folders into DataFrames, and the keys that group runs;
* :mod:`~gradamp_jax.analysis.statistics`: the tables of the report (tables in, tables out);
* :mod:`~gradamp_jax.analysis.labels`: the names of families and settings;
* :mod:`~gradamp_jax.analysis.figures`: matplotlib figures of those tables;
* :mod:`~gradamp_jax.analysis.report`: ``python -m gradamp_jax.report ROOT --out DIR``.

The package exports what the notebooks and the docs call; the rest is in its module.
"""

from gradamp_jax.analysis.runs import load_run, load_runs, read_frame
from gradamp_jax.analysis.statistics import (
  compare,
  epoch_times,
  measure_agreement,
  selected_counts,
  selection_table,
  summarize,
)
