"""Per-layer actions: what a selection does to each layer (docs/method.md §10, docs/actions.md).

An :class:`Action` turns a selection into one **scale** per layer, multiplying its gradients
(or updates) while the selection is active. The paper's is ``amplify`` (eq. 2); one's own is
one :func:`register` call.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from gradamp_jax import phases as phases_lib


class Selection(NamedTuple):
  """What an action reads: one selection, per layer.

  Attributes:
    selected: bool ``(L,)``, the layers chosen.
    normalized: ``(L,)`` float32 Ĝ (eqs. 6, 8); zeros for a random selection.
    eligible: bool ``(L,)``; an ineligible layer must get scale 1.
    factor: the phase's factor (a float32 scalar).
  """

  selected: jax.Array
  normalized: jax.Array
  eligible: jax.Array
  factor: jax.Array


class Param(NamedTuple):
  """A parameter of an action: its default, its check and what the check allows."""

  default: float
  check: Callable[[float], bool]
  allowed: str


class Action(NamedTuple):
  """A per-layer action of a selection.

  Attributes:
    name: its key in configs (``amplification.action``) and run files.
    scale: ``scale(selection, params) -> (L,)`` float32 factors; 1 leaves a layer alone.
    params: name -> :class:`Param`; config fields ``amplification.<name>``.
    uses_measure: it reads ``normalized`` (so it needs a selection by a measure).
    updates_only: only with ``where="updates"`` (e.g. a scale of 0: on the gradients,
      momentum and weight decay would still move the layer).
    reference: where it comes from.
    thresholded: it reads ``selected`` (False for ``scale_by_zscore``).
  """

  name: str
  scale: Callable[[Selection, dict], jax.Array]
  params: dict
  uses_measure: bool
  updates_only: bool
  reference: str
  thresholded: bool = True


def _amplify(s: Selection, params: dict) -> jax.Array:
  del params
  return jnp.where(s.selected, s.factor, 1.0)


def _freeze(s: Selection, params: dict) -> jax.Array:
  del params
  return jnp.where(s.selected, 0.0, 1.0)


def _scale_by_zscore(s: Selection, params: dict) -> jax.Array:
  z = jnp.where(jnp.isfinite(s.normalized), s.normalized, 0.0)
  scale = jnp.clip(1.0 + params["alpha"] * z, params["lo"], params["hi"])
  return jnp.where(s.eligible, scale, 1.0)


def _non_negative(x) -> bool:
  return phases_lib.is_finite_real(x) and float(x) >= 0


ACTIONS: dict[str, Action] = {
  a.name: a
  for a in (
    Action("amplify", _amplify, {}, False, False, "Basodi et al. 2023, eq. 2"),
    Action(
      "freeze",
      _freeze,
      {},
      False,
      True,
      "layer freezing by gradient statistics (AutoFreeze, arXiv:2102.01386; Egeria, "
      "arXiv:2201.06227) or at random (LISA, arXiv:2403.17919)",
    ),
    Action(
      "scale_by_zscore",
      _scale_by_zscore,
      {
        "alpha": Param(1.0, _non_negative, "a finite number >= 0"),
        "lo": Param(0.0, _non_negative, "a finite number >= 0"),
        "hi": Param(2.0, _non_negative, "a finite number >= 0, above lo"),
      },
      True,
      False,
      "every eligible layer × clip(1 + alpha · Ĝ, lo, hi), no threshold",
      thresholded=False,
    ),
  )
}
_BUILT_IN = frozenset(ACTIONS)


def check_action(name: str) -> Action:
  """The registered action ``name`` (ValueError naming the registered ones)."""
  if name not in ACTIONS:
    raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {name!r}")
  return ACTIONS[name]


def check_params(name: str, params: dict | None) -> dict:
  """``params`` of action ``name`` checked, with the defaults of those not given."""
  action = check_action(name)
  params = dict(params or {})
  unknown = sorted(set(params) - set(action.params))
  if unknown:
    allowed = ", ".join(action.params) or "none"
    raise ValueError(f"action {name!r} has no parameter {unknown[0]!r} (it has: {allowed})")
  out = {}
  for key, param in action.params.items():
    value = params.get(key, param.default)
    if not phases_lib.is_traced(value):  # a cohort member's was checked before tracing
      if not param.check(value):
        raise ValueError(f"{key}: must be {param.allowed}, got {value!r}")
      value = float(value)
    out[key] = value
  traced = any(phases_lib.is_traced(v) for v in out.values())
  if name == "scale_by_zscore" and not traced and not out["lo"] < out["hi"]:
    raise ValueError(f"hi: must be above lo ({out['lo']:g}), got {out['hi']:g}")
  return out


def register(action: Action, *, replace: bool = False) -> Action:
  """Adds an action of one's own to :data:`ACTIONS`, from one's own code or config file.

  ``scale`` must be traceable ``jax.numpy``, 1 for every ineligible layer; each parameter
  becomes the config field ``amplification.<name>``.

  Raises:
    ValueError: for a bad field (named), or a name already registered.

  Example:
    >>> import jax.numpy as jnp
    >>> from gradamp_jax import actions
    >>> halve = actions.register(actions.Action(
    ...     "halve", lambda s, p: jnp.where(s.selected, 0.5, 1.0), {}, uses_measure=False,
    ...     updates_only=False, reference="the selected layers at half speed"), replace=True)
    >>> _ = actions.ACTIONS.pop("halve")  # (this example leaves ACTIONS as it was)
  """
  if not isinstance(action, Action):
    raise ValueError(f"register takes an actions.Action, got {type(action).__name__}")
  if not (isinstance(action.name, str) and action.name.isidentifier()):
    raise ValueError(f"Action.name: must be a Python identifier, got {action.name!r}")
  if not callable(action.scale):
    raise ValueError(f"Action.scale: must be a function, got {action.scale!r}")
  if not all(isinstance(p, Param) for p in dict(action.params).values()):
    raise ValueError("Action.params: must map names to actions.Param")
  for name in dict(action.params):
    if not (isinstance(name, str) and name.isidentifier()):
      raise ValueError(f"Action.params: names must be Python identifiers, got {name!r}")
  if action.name in _BUILT_IN or (action.name in ACTIONS and not replace):
    kind = "built-in" if action.name in _BUILT_IN else "registered; pass replace=True to replace it"
    raise ValueError(f"action {action.name!r} is already {kind}")
  ACTIONS[action.name] = action
  return action


def params_text(name: str, params: dict | None) -> str | None:
  """Action ``name``'s parameters (defaults filled in) as one sorted ``key=value`` string;
  None for an action without parameters or not registered.

  >>> params_text("scale_by_zscore", {"alpha": 0.5})
  'alpha=0.5 hi=2 lo=0'
  """
  action = ACTIONS.get(name)
  if action is None or not action.params:
    return None
  params = dict(params or {})
  values = {k: params.get(k, p.default) for k, p in action.params.items()}
  return " ".join(f"{k}={float(v):g}" for k, v in sorted(values.items()))


def layer_scale(name: str, params: dict, selection: Selection) -> jax.Array:
  """The per-layer scale action ``name`` gives ``selection`` (float32 ``(L,)``)."""
  return jnp.asarray(ACTIONS[name].scale(selection, params), jnp.float32)
