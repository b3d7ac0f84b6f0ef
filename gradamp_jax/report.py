"""``python -m gradamp_jax.report ROOT --out DIR``: tables and figures of a sweep's runs.

The report lives in :mod:`gradamp_jax.analysis.report`; this module keeps the short name.
"""

import sys

from gradamp_jax.analysis import report

if __name__ == "__main__":
  sys.exit(report.main())
