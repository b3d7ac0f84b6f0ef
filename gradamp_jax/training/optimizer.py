"""The optax chain a config asks for: amplification, weight decay, SGD with momentum."""

from __future__ import annotations

import optax

import gradamp_jax as ga

MEASURED_METHODS = ("intelligent", "matched_random")  # select by G or G′


def create_amplification(config, steps_per_epoch: int):
  """The amplification transform the config asks for.

  With ``track_directionality`` every method, ``none`` included (a random selection of
  no layer), gets a transform with one state layout that measures
  ``config.tracked_measures`` (G and G′ by default) every epoch:
  runs that differ only in their selection rule are then the same computation until
  their selections differ, and one can start from another's checkpoint
  (:mod:`gradamp_jax.sweeps.fork`). Without it, ``none`` gets no transform (None).
  """
  amp = config.amplification
  track = tuple(config.tracked_measures) if config.track_directionality else False
  common = dict(reselect_every=amp.reselect_every or None, seed=config.seed, eligible=amp.eligible)
  if amp.method == "none" and not track:
    return None
  if amp.method in MEASURED_METHODS:  # tracking shares the selection's accumulators
    return ga.intelligent_amplification(
      config.phases,
      steps_per_epoch,
      measure=amp.measure,
      case=amp.case,
      threshold=amp.threshold,
      track_directionality=track,
      control="matched_random" if amp.method == "matched_random" else None,
      **common,
    )
  ratio = {"none": 0.0, "all": 1.0}.get(amp.method, amp.ratio)
  return ga.random_amplification(
    config.phases, steps_per_epoch, ratio=ratio, track_directionality=track, **common
  )


def create_optimizer(config, steps_per_epoch: int) -> optax.GradientTransformation:
  """Amplification → weight decay → SGD with momentum.

  Weight decay is added after amplification, as PyTorch's ``SGD(weight_decay=...)`` adds
  it inside the optimizer step: only the loss gradient is amplified. With
  ``track_directionality`` the amplification transform measures the raw gradients' G and
  G′ every epoch, with the accumulators its selections use.
  """
  amplification = create_amplification(config, steps_per_epoch)
  parts = []
  if amplification is not None:
    parts.append(amplification)
  if config.weight_decay:
    parts.append(optax.add_decayed_weights(config.weight_decay))
  learning_rate = ga.learning_rate_schedule(config.phases, steps_per_epoch)
  parts.append(optax.sgd(learning_rate, momentum=config.momentum or None))
  return optax.chain(*parts)
