"""``python -m gradamp_jax.report ROOT --out DIR``: :mod:`gradamp_jax.analysis.report`."""

import sys

from gradamp_jax.analysis import report

if __name__ == "__main__":
  sys.exit(report.main())
