"""What each config field allows, and ``--config.field=value`` overrides checked against it.

Every check raises a ``ValueError`` naming the field (``config.<field>: <what is allowed>,
got <value>``) and nothing else, before any data is read (docs/architecture.md).
"""

from __future__ import annotations

import ast
import difflib
import os
import re
from typing import Any, Callable

import jax
import ml_collections

from gradamp_jax import actions as ga_actions
from gradamp_jax import amplification as ga_amplification
from gradamp_jax import layers as layers_lib
from gradamp_jax import measures as ga_measures
from gradamp_jax import models, run_folder
from gradamp_jax.phases import is_finite_real, is_int, parse_phases
from gradamp_jax.training import optimizer
from gradamp_jax.training.config_args import BOOLEANS

_Rule = tuple[Callable[[Any], bool], Any]  # a field's predicate and what it allows
DATASETS = ("cifar10", "cifar100")
MAX_SEED = 2**31 - 1
# A CIFAR split (train or test), optionally sliced by counts or percentages; "+" joins parts.
_PART = r"(train|test)(\[-?\d*%?:-?\d*%?\]|\[-?\d+%?\])?"
_SPLIT = re.compile(rf"^{_PART}(\+{_PART})*$")


class _OneOf:
  """What is allowed: ``options``, or a function's (a registry's names when the text is read)."""

  def __init__(self, options, words: str = "one of"):
    self.options, self.words = options, words

  def names(self) -> tuple[str, ...]:
    return tuple(self.options() if callable(self.options) else self.options)

  def __str__(self) -> str:
    return f"{self.words} {', '.join(self.names())}"


def _choice(options) -> _Rule:
  """A choice among ``options``, or a function's (a registry's names as they are when checked)."""
  allowed = _OneOf(options)
  return (lambda x: isinstance(x, str) and x in allowed.names()), allowed


def _number(ok: Callable[[float], bool], allowed: str) -> _Rule:
  return (lambda x: is_finite_real(x) and ok(x)), allowed


_NON_NEGATIVE = _number(lambda x: x >= 0, "a finite number >= 0")
_POSITIVE = _number(lambda x: x > 0, "a finite number > 0")
_FRACTION = _number(lambda x: 0 <= x < 1, "a number in [0, 1)")


def _int_range(low, high=None) -> _Rule:
  allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
  return (lambda x: is_int(x) and x >= low and (high is None or x <= high)), allowed


def _optional_text(x) -> bool:
  return x is None or (isinstance(x, str) and x.strip() != "")


_BOOL = (lambda x: isinstance(x, bool)), "true or false"


def _measure_set(x) -> bool:
  return (
    isinstance(x, (list, tuple))
    and len(x) > 0
    and len(set(x)) == len(x)
    and all(isinstance(m, str) and m in ga_measures.MEASURES for m in x)
  )


# field: (predicate, what is allowed). Predicates return False or raise ValueError.
RULES: dict[str, _Rule] = {
  "model": _choice(models.names),
  "width": _POSITIVE,
  "dataset": _choice(DATASETS),
  "data_dir": (_optional_text, "a directory path or None (the TFDS default)"),
  "download": _BOOL,
  "image_folder": (_optional_text, "a folder path or None (use TFDS)"),
  "train_split": (
    lambda x: isinstance(x, str) and bool(_SPLIT.match(x.replace(" ", ""))),
    "train or test, optionally sliced: train, train[:20%], train[1000:5000]",
  ),
  "validation_fraction": _FRACTION,
  "batch_size": _int_range(1),
  "eval_batch_size": _int_range(1),
  "phases": (
    lambda x: bool(parse_phases(x)),  # raises ValueError naming the phase and its field
    "a non-empty tuple of (end_epoch, learning_rate, is_amp, "
    "amp_factor), e.g. ((1, 0.1, 0, 1), (3, 0.1, 1, 2))",
  ),
  "optimizer": _choice(optimizer.OPTIMIZERS),
  "momentum": _FRACTION,
  "weight_decay": _NON_NEGATIVE,
  "adam_b1": _FRACTION,
  "adam_b2": _FRACTION,
  "adam_eps": _POSITIVE,
  "lars_trust_coefficient": _POSITIVE,
  "seed": _int_range(0, MAX_SEED),
  "half_precision": _BOOL,
  "conv": _choice(("auto", *models.CONV_IMPLEMENTATIONS)),
  "steps_per_dispatch": _int_range(0),
  "keep_checkpoints": _int_range(1),
  "track_directionality": _BOOL,
  "tracked_measures": (
    _measure_set,
    _OneOf(lambda: ga_measures.MEASURES, "a non-empty list of distinct measures from"),
  ),
  "amplification.method": _choice(ga_amplification.METHODS),
  "amplification.measure": _choice(lambda: ga_measures.MEASURES),
  "amplification.case": (
    (lambda x: is_int(x) and x in ga_measures.CASES),
    "1 (upper tail), 2 (two-sided) or 3 (lower tail)",
  ),
  "amplification.action": _choice(lambda: ga_actions.ACTIONS),
  "amplification.alpha": _NON_NEGATIVE,
  "amplification.lo": _NON_NEGATIVE,
  "amplification.hi": _NON_NEGATIVE,
  "amplification.threshold": (is_finite_real, "a finite number"),
  "amplification.reselect_every": _int_range(0),
  "amplification.ratio": _number(lambda x: 0 <= x <= 1, "a number in [0, 1]"),
  "amplification.eligible": _choice(layers_lib.ELIGIBLE_CHOICES),
  "amplification.where": _choice(ga_amplification.PLACEMENTS),
}


# The fields of the selection itself in ``config.amplification``: an action's parameter is a
# field beside them (``amplification.<name>``), so it may take none of their names.
SELECTION_FIELDS = tuple(
  "method measure case action threshold reselect_every ratio eligible where".split()
)


def param_rules(action: str | None = None) -> dict[str, _Rule]:
  """``amplification.<name>``'s rule for each registered action's parameter :data:`RULES`
  lacks: a finite number its ``Param`` allows (``action``'s ``Param`` where several have it)."""
  first = [ga_actions.ACTIONS[action]] if action in ga_actions.ACTIONS else []
  rules = {}
  for registered in (*first, *ga_actions.ACTIONS.values()):
    for name, param in dict(registered.params).items():
      field = f"amplification.{name}"
      if field not in RULES and field not in rules:
        rules[field] = _number(param.check, param.allowed)
  return rules


def rules(action: str | None = None) -> dict[str, _Rule]:
  """Every known field's rule: :data:`RULES` and :func:`param_rules`."""
  return {**RULES, **param_rules(action)}


def _fail(field: str, allowed: str, value: Any):
  raise ValueError(f"config.{field}: must be {allowed}, got {value!r}")


def unknown_field(field: str, known) -> str:
  """The message for an unknown ``field``: the nearest known one if one is near, else all.

  >>> unknown_field("amplification.treshold", ["seed", "amplification.threshold"])
  'config.amplification.treshold: unknown field; did you mean amplification.threshold?'
  """
  near = difflib.get_close_matches(field, list(known), n=1, cutoff=0.8)
  if near:
    return f"config.{field}: unknown field; did you mean {near[0]}?"
  return f"config.{field}: unknown field; known fields: {', '.join(known)}"


def _rule(field: str, known: dict[str, _Rule]) -> _Rule:
  if field not in known:
    raise ValueError(unknown_field(field, known))
  return known[field]


def check_fields(config: ml_collections.ConfigDict) -> None:
  """Checks every field of ``config`` against :func:`rules`; unknown fields and missing ones
  of :data:`RULES` fail (an action's parameter may be left out: its default)."""
  values = run_folder.flat_config(config)
  known = rules(values.get("amplification.action"))
  for field, value in values.items():
    ok, allowed = _rule(field, known)
    try:
      good = ok(value)
    except (ValueError, TypeError, ArithmeticError) as e:
      raise ValueError(f"config.{field}: {e}") from None
    if not good:
      _fail(field, allowed, value)
  missing = [f for f in RULES if f not in values]
  if missing:
    raise ValueError(
      f"config.{missing[0]}: missing; start from configs/default.py, which sets every field"
    )


def parse_value(field: str, text: str, current: Any, action: str | None = None) -> Any:
  """Converts override ``text`` to the type of the field's ``current`` value."""
  rule, stripped = _rule(field, rules(action)), text.strip()
  try:
    if isinstance(current, bool) or rule is _BOOL:
      return BOOLEANS[stripped.lower()]
    if isinstance(current, (tuple, list)):
      value = ast.literal_eval(stripped)
      return tuple(value) if isinstance(value, list) else value
    if isinstance(current, (int, float)):
      return (int if isinstance(current, int) else float)(stripped)
  except (KeyError, ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
    _fail(field, rule[1], text)
  if current is None and stripped in ("None", "none", ""):
    return None
  return text


def apply_overrides(config: ml_collections.ConfigDict, overrides: list[str]) -> None:
  """Applies ``field=value`` overrides (``--config.`` prefix optional) to ``config``; an
  action's parameter (:func:`param_rules`) is a number, set whether the config has it or not.

  Raises:
    ValueError: naming the field, for an unknown field, a group given a value, or a value
      not of the field's type (values are converted only; :func:`check_fields` checks them).
  """
  known = run_folder.flat_config(config)
  for item in overrides:
    body = item[len("--config.") :] if item.startswith("--config.") else item
    field, sep, text = body.partition("=")
    if not sep:
      raise ValueError(f"config override {item!r}: expected --config.field=value")
    action = known.get("amplification.action")
    params = param_rules(action)
    if field not in known and field not in params:
      _refuse_unknown(field, known, params)
    value = parse_value(field, text, 0.0 if field in params else known[field], action)
    node, _, leaf = field.rpartition(".")
    target = config[node] if node else config
    with target.unlocked(), target.ignore_type():
      target[leaf] = value
    known[field] = value


def _refuse_unknown(field: str, known: dict, params: dict):
  """Raises the ``ValueError`` for an override of a field neither known nor a parameter."""
  if field in {f.rsplit(".", 1)[0] for f in known if "." in f}:
    raise ValueError(
      f"config.{field}: is a group of fields; set one of them, e.g. "
      f"--config.{next(f for f in known if f.startswith(field + '.'))}=..."
    )
  raise ValueError(unknown_field(field, [*known, *params]))


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the config before any data is read: :func:`check_fields`, then what involves
  several fields or this machine; a ``ValueError`` names the bad field and what is allowed."""
  check_fields(config)
  if config.image_folder and not os.path.isdir(os.path.expanduser(config.image_folder)):
    raise ValueError(
      f"config.image_folder: folder {config.image_folder!r} does not exist; it must hold "
      "train/<class>/* and test/<class>/* images"
    )
  for field in ("batch_size", "eval_batch_size"):
    if config[field] % jax.device_count():
      raise ValueError(
        f"config.{field}: must be a positive multiple of the device count "
        f"({jax.device_count()}), got {config[field]!r}"
      )
  amp = config.amplification
  measured = amp.method in ga_amplification.MEASURED_METHODS
  if config.track_directionality and measured and amp.measure not in config.tracked_measures:
    raise ValueError(
      f"config.amplification.measure: {amp.measure!r} is not in "
      f"config.tracked_measures {tuple(config.tracked_measures)}; track it "
      "(one state layout for every run of a sweep) or select by a tracked one"
    )
  _check_action(amp)
  _check_threshold(amp)
  try:  # the transforms check measure, case, threshold and ratio themselves
    optimizer.create_amplification(config, steps_per_epoch=1)
  except ValueError as e:
    raise ValueError(f"config.amplification: {e}") from None


def _check_action(amp) -> None:
  """What the action needs of the other amplification fields."""
  action = ga_actions.ACTIONS[amp.action]
  if amp.method == "none":
    return
  taken = [name for name in action.params if name in SELECTION_FIELDS]
  if taken:
    raise ValueError(
      f"config.amplification.action: {amp.action!r} has a parameter {taken[0]!r}, which is "
      f"the selection's field amplification.{taken[0]}; give the parameter another name"
    )
  if action.updates_only and amp.where != "updates":
    raise ValueError(
      f"config.amplification.action: {amp.action!r} needs amplification.where='updates', "
      f"got where={amp.where!r} (on the gradients, momentum and weight decay still move a "
      "layer scaled by 0)"
    )
  if action.uses_measure and amp.method != "intelligent":
    raise ValueError(
      f"config.amplification.action: {amp.action!r} reads the normalized measure of every "
      f"layer; amplification.method must be 'intelligent', got {amp.method!r}"
    )
  try:
    ga_actions.check_params(amp.action, optimizer.action_params(amp))
  except ValueError as e:
    raise ValueError(f"config.amplification.{e}") from None


def _check_threshold(amp) -> None:
  """Case 2 (``|Ĝ| > t``) with ``t <= 0`` selects every eligible layer by construction."""
  if optimizer.selects_by_threshold(amp) and amp.case == 2 and amp.threshold <= 0:
    raise ValueError(
      f"config.amplification.threshold: must be > 0 under case 2 (|Ĝ| > t), got "
      f"{amp.threshold!r}; a threshold <= 0 selects every eligible layer whatever the "
      "measure (method='all' does that)"
    )
