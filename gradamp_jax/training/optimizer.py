"""The optimizer a config asks for: amplification around SGD, AdamW, LAMB or LARS."""

from __future__ import annotations

from typing import Optional

import jax
import optax

import gradamp_jax as ga

OPTIMIZERS = ("sgd", "adamw", "lamb", "lars")
# What a gradient factor becomes under each optimizer but SGD (docs/method.md §9).
_GRADIENT_FACTOR_FATE = {
  "adamw": "transient: Adam's second moment cancels it within about 1/(1 - adam_b2) steps",
  "lamb": "cancelled: LAMB's per-layer trust ratio removes a per-layer factor",
  "lars": "cancelled: LARS's per-layer trust ratio removes a per-layer factor",
}
# Learning rates outside these get a warning: far from where each optimizer is used
# (docs/adamw.md: AdamW's best rate for ResNet-8 on CIFAR-10 was 1e-2, SGD's 0.1).
USUAL_LEARNING_RATES = dict(
  sgd=(1e-4, 1.0), adamw=(1e-5, 3e-2), lamb=(1e-5, 3e-2), lars=(1e-3, 30.0)
)


def create_amplification(config, steps_per_epoch: int, rule: Optional[dict] = None):
  """The amplification transform the config asks for.

  With ``track_directionality`` every method, ``none`` included (a random selection of no
  layer), gets a transform of one state layout (:mod:`gradamp_jax.sweeps.fork`); without it,
  ``none`` gets None. ``rule``: a cohort member's traced fields (``cohort.member_rules``).
  """
  amp = config.amplification
  rule = dict(rule or {})
  track = tuple(config.tracked_measures) if config.track_directionality else False
  if amp.method == "none" and not track:
    return None
  params = action_params(amp) | {k: v for k, v in rule.items() if k != "threshold"}
  # none selects no layer, so no action acts: the default's transform
  action, params = ("amplify", {}) if amp.method == "none" else (amp.action, params)
  common = dict(reselect_every=amp.reselect_every or None, seed=config.seed, action=action)
  common.update(eligible=amp.eligible, action_params=params, track_directionality=track)
  if amp.method in ga.amplification.MEASURED_METHODS:
    control = "matched_random" if amp.method == "matched_random" else None
    threshold = rule.get("threshold", amp.threshold)
    by = dict(measure=amp.measure, case=amp.case, threshold=threshold, control=control)
    return ga.intelligent_amplification(config.phases, steps_per_epoch, **by, **common)
  ratio = {"none": 0.0, "all": 1.0}.get(amp.method, amp.ratio)
  return ga.random_amplification(config.phases, steps_per_epoch, ratio=ratio, **common)


def selects_by_threshold(amp) -> bool:
  """Whether ``amp.threshold`` decides the selection (a measured method, a thresholded action)."""
  action = ga.actions.ACTIONS.get(amp.action)
  return amp.method in ga.amplification.MEASURED_METHODS and bool(action and action.thresholded)


def action_params(amp) -> dict:
  """The parameters of ``amp.action`` from their ``config.amplification`` fields."""
  return {name: amp[name] for name in ga.actions.ACTIONS[amp.action].params if name in amp}


def create_base_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """``config.optimizer`` with the phases' learning rates; ``sgd``'s weight decay is coupled
  (PyTorch's ``SGD(weight_decay=...)``), ``adamw``'s and ``lamb``'s decoupled."""
  learning_rate = ga.learning_rate_schedule(config.phases, steps_per_epoch)
  name, decay = config.optimizer, config.weight_decay
  adam = dict(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
  if name == "adamw":
    return optax.adamw(learning_rate, weight_decay=decay, **adam)
  if name == "lamb":
    return optax.lamb(learning_rate, weight_decay=decay, **adam)
  if name == "lars":
    lars = dict(trust_coefficient=config.lars_trust_coefficient, momentum=config.momentum)
    return optax.lars(learning_rate, weight_decay=decay, **lars)
  parts = [optax.add_decayed_weights(decay)] if decay else []
  return optax.chain(*parts, optax.sgd(learning_rate, momentum=config.momentum or None))


def create_optimizer(
  config, steps_per_epoch: int, rule: Optional[dict] = None
) -> optax.GradientTransformation:
  """The base optimizer wrapped by the amplification (:func:`gradamp_jax.amplify`) at
  ``config.amplification.where``; weight decay is amplified only with ``where="updates"``."""
  base = create_base_optimizer(config, steps_per_epoch)
  amplification = create_amplification(config, steps_per_epoch, rule)
  if amplification is None:
    return base
  return ga.amplify(base, amplification, where=config.amplification.where)


def config_warnings(config) -> list[str]:
  """One line for each thing a valid config does that is unlikely to be meant."""
  found = [placement_warning(config), learning_rate_warning(config), threshold_warning(config)]
  if config.steps_per_dispatch > 1 and jax.default_backend() == "cpu":
    found.append(
      f"warning: steps_per_dispatch={config.steps_per_dispatch} runs the steps in a loop, which "
      "XLA:CPU compiles to much slower convolution gradients (30x for resnet8 in "
      "BENCHMARKS.md); 0 (automatic) runs one step per call on a CPU"
    )
  if config.amplification.method != "none":
    start = 0
    for number, phase in enumerate(ga.parse_phases(config.phases), 1):
      if phase.is_amp and phase.end_epoch - start == 1:
        found.append(
          f"warning: phases[{number - 1}] (epoch {phase.end_epoch}) is an amplified phase of "
          "one epoch: its epoch is the analysis epoch, so it amplifies nothing; make it "
          "two epochs or more"
        )
      start = phase.end_epoch
  return [w for w in found if w]


def learning_rate_warning(config) -> Optional[str]:
  """One line when a phase's learning rate is far outside ``config.optimizer``'s usual range."""
  low, high = USUAL_LEARNING_RATES[config.optimizer]
  rates = sorted({p.learning_rate for p in ga.parse_phases(config.phases)})
  outside = [r for r in rates if not low <= r <= high]
  if not outside:
    return None
  return (
    f"warning: learning rate {', '.join(f'{r:g}' for r in outside)} under optimizer="
    f"{config.optimizer!r} is outside its usual range [{low:g}, {high:g}]; the phases' learning "
    "rates are the optimizer's (configs/quickstart.py:optimizer=adamw picks the AdamW study's)"
  )


def threshold_warning(config) -> Optional[str]:
  """One line when case 1 (``Ĝ > t``) or 3 (``Ĝ < -t``) has ``t <= 0``: not a tail."""
  amp = config.amplification
  if not selects_by_threshold(amp) or amp.case == 2 or amp.threshold > 0:
    return None
  rule, side, other, tail = (
    ("Ĝ > t", "above", "below", "upper") if amp.case == 1 else ("Ĝ < -t", "below", "above", "lower")
  )
  beyond = f" and those up to {-amp.threshold:g} std {other} it" if amp.threshold < 0 else ""
  return (
    f"warning: amplification.threshold={amp.threshold:g} under case {amp.case} ({rule}) selects "
    f"every layer {side} the mean{beyond}, not the {tail} tail; a threshold > 0 selects the tail"
  )


def placement_warning(config) -> Optional[str]:
  """One line when the config amplifies gradients under an optimizer that undoes it."""
  amp = config.amplification
  fate = _GRADIENT_FACTOR_FATE.get(config.optimizer)
  if amp.method == "none" or amp.where != "gradients" or fate is None:
    return None
  return (
    f"warning: amplification.where='gradients' under optimizer={config.optimizer!r}: the "
    f"factor is {fate}; amplification.where='updates' scales the layers' updates instead"
  )
