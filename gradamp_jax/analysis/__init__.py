"""Reading run folders, the report's statistics, its figures and the report itself.

The analysis reads files only: it never imports the training program (only the method's
measure and action definitions, for their labels and parameters), so it runs wherever the
run folders are (a laptop, a notebook), without accelerators.

* :mod:`~gradamp_jax.analysis.runs`: run folders into DataFrames (one row per run);
* :mod:`~gradamp_jax.analysis.statistics`: groups, threshold choice, paired differences,
  selection and directionality tables;
* :mod:`~gradamp_jax.analysis.figures`: matplotlib figures of those tables;
* :mod:`~gradamp_jax.analysis.report`: ``python -m gradamp_jax.report ROOT --out DIR``.
"""

from gradamp_jax.analysis.runs import (
  APPLIES,
  CHOSEN_COLUMNS,
  COMPARISON_COLUMNS,
  EPOCH_TIME_COLUMNS,
  FAMILY_KEYS,
  GROUP_KEYS,
  METHOD_ORDER,
  RUN_COLUMNS,
  SETTING_KEYS,
  SUMMARY_COLUMNS,
  is_missing,
  load_run,
  load_runs,
  machine_of,
  num_epochs,
  read_frame,
  run_keys,
  run_row,
  timed_epochs,
  typed_frame,
)
from gradamp_jax.analysis.statistics import (
  choose_setting,
  choose_threshold,
  chosen_runs,
  compare,
  directionality_table,
  epoch_times,
  family_label,
  group_conflicts,
  matches,
  matches_setting,
  mean_curves,
  measure_agreement,
  measure_columns,
  none_key,
  paired_difference,
  reselection_label,
  sample_std,
  selected_counts,
  selection_frequency,
  selection_sizes,
  selection_table,
  setting_text,
  summarize,
  t_interval,
)
from gradamp_jax.jsonl import read_jsonl
from gradamp_jax.run_folder import find_runs
