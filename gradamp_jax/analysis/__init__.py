"""Reading run folders, the report's statistics, its figures and the report itself.

The analysis reads files only: it never imports the training program, so it runs wherever
the run folders are (a laptop, a notebook), without accelerators.

* :mod:`~gradamp_jax.analysis.runs`: run folders into DataFrames (one row per run);
* :mod:`~gradamp_jax.analysis.statistics`: groups, threshold choice, paired differences,
  selection and directionality tables;
* :mod:`~gradamp_jax.analysis.figures`: matplotlib figures of those tables;
* :mod:`~gradamp_jax.analysis.report`: ``python -m gradamp_jax.report ROOT --out DIR``.
"""

from gradamp_jax.analysis.runs import RUN_COLUMNS
from gradamp_jax.analysis.runs import GROUP_KEYS
from gradamp_jax.analysis.runs import SUMMARY_COLUMNS
from gradamp_jax.analysis.runs import FAMILY_KEYS
from gradamp_jax.analysis.runs import COMPARISON_COLUMNS
from gradamp_jax.analysis.runs import EPOCH_TIME_COLUMNS
from gradamp_jax.analysis.runs import APPLIES
from gradamp_jax.analysis.runs import METHOD_ORDER
from gradamp_jax.analysis.runs import read_frame
from gradamp_jax.analysis.runs import find_runs
from gradamp_jax.analysis.runs import load_run
from gradamp_jax.analysis.runs import read_json
from gradamp_jax.analysis.runs import run_keys
from gradamp_jax.analysis.runs import num_epochs
from gradamp_jax.analysis.runs import run_row
from gradamp_jax.analysis.runs import load_runs
from gradamp_jax.analysis.runs import typed_frame
from gradamp_jax.analysis.runs import is_missing
from gradamp_jax.analysis.statistics import sample_std
from gradamp_jax.analysis.statistics import t_interval
from gradamp_jax.analysis.statistics import summarize
from gradamp_jax.analysis.statistics import choose_threshold
from gradamp_jax.analysis.statistics import paired_difference
from gradamp_jax.analysis.statistics import compare
from gradamp_jax.analysis.statistics import chosen_runs
from gradamp_jax.analysis.statistics import epoch_times
from gradamp_jax.analysis.statistics import group_conflicts
from gradamp_jax.analysis.statistics import mean_curves
from gradamp_jax.analysis.statistics import reselection_label
from gradamp_jax.analysis.statistics import family_label
from gradamp_jax.analysis.statistics import normalize
from gradamp_jax.analysis.statistics import selection_table
from gradamp_jax.analysis.statistics import selection_frequency
from gradamp_jax.analysis.statistics import selected_counts
from gradamp_jax.analysis.statistics import directionality_table
from gradamp_jax.analysis.statistics import measure_agreement
from gradamp_jax.analysis.statistics import selection_sizes
from gradamp_jax.jsonl import read_jsonl
