"""The names the figures and the report give to families, settings and re-selections."""

from __future__ import annotations

from gradamp_jax import actions as ga_actions
from gradamp_jax import amplification as ga_amplification
from gradamp_jax import measures
from gradamp_jax.analysis.runs import is_missing


def reselection_label(reselect_every) -> str:
  """``once per phase`` for 0, else ``every k epochs``."""
  return "once per phase" if reselect_every == 0 else f"every {reselect_every} epochs"


def family_label(row) -> str:
  """A short name of a family: ``none``, ``random``, ``G′ c1``, ``matched G′ c1``, ``freeze
  G′ c3``, ``scale_by_zscore G′``; ``… (updates)`` when the factor multiplies the updates."""
  method, action = row["method"], row.get("action")
  name = str(method)
  if method in ga_amplification.MEASURED_METHODS:
    name = measures.label(row["measure"])
    if getattr(ga_actions.ACTIONS.get(action), "thresholded", True):
      name += f" c{int(row['case'])}"
    name = name if method == "intelligent" else f"matched {name}"
  if isinstance(action, str) and action != "amplify":
    name = f"{action} {name}"
  return f"{name} (updates)" if row.get("where") == "updates" else name


def setting_text(row) -> str:
  """A comparison row's chosen setting, e.g. ``t=1``, ``ratio=0.3``, ``alpha=0.5 hi=2 lo=0``
  (empty when there is none)."""
  shown = (("chosen_threshold", "t={:g}"), ("chosen_ratio", "ratio={:g}"), ("chosen_params", "{}"))
  return ", ".join(text.format(row[k]) for k, text in shown if not is_missing(row.get(k)))
