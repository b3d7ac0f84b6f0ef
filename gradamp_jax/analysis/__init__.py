"""Reading run folders, the report's statistics, its figures and the report itself.

The analysis reads files only and never imports the training program, so it runs wherever
the run folders are, without accelerators. The package exports what the notebooks and the
docs call.
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
