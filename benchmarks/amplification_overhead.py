"""Cost of amplification and of directionality tracking per step, side by side.

    python benchmarks/amplification_overhead.py --model resnet20 --batch_size 128

Times the training program's compiled chunk of steps
(``gradamp_jax.training.steps.make_train_chunk``: data on the
device, augmentation in the step) on the same model and random CIFAR-shaped data, ``--steps``
steps per call, with every amplification method (none, G, G′, random), each without and with
``track_directionality`` (the per-epoch G/G′ monitor), in an epoch outside any analysis
window, in the analysis epoch and while amplifying, the variants taking turns; prints the
best time per step, its ratio to no amplification without tracking, and the optimizer
state's size. The paper reports 0.05–4.8 % overhead in training time (V100).
"""

import argparse
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks.harness import Trainer, synthetic_split  # noqa: E402
from configs import default  # noqa: E402
from gradamp_jax import input_pipeline  # noqa: E402

VARIANTS = {  # name: (amplification fields, track_directionality)
  "none": (dict(method="none"), False),
  "none + monitor": (dict(method="none"), True),
  "G": (dict(method="intelligent", measure="G"), False),
  "G, tracking": (dict(method="intelligent", measure="G"), True),
  "G_prime": (dict(method="intelligent", measure="G_prime"), False),
  "G_prime, tracking": (dict(method="intelligent", measure="G_prime"), True),
  "random": (dict(method="random"), False),
}
EPOCHS = ("outside", "analysis", "amplified")  # phases ((1, 0.1, 0, 1), (3, 0.1, 1, 2))


def build(config, steps_per_epoch, data):
  """A :class:`Trainer` after its first (compiling) update."""
  trainer = Trainer(config, data, steps_per_epoch)
  trainer.run(0, 1)
  trainer.wait()
  return trainer


def state_megabytes(state) -> float:
  return sum(x.nbytes for x in jax.tree.leaves(state.opt_state)) / 2**20


def time_all(configs, data, steps, repeats):
  """Best seconds per step of every variant in each of ``EPOCHS``, ``steps`` steps per
  call; the variants take turns within each repeat so that machine noise hits all alike."""
  steps_per_epoch = 1 + steps * repeats  # the epoch's first step is untimed
  trainers = {name: build(config, steps_per_epoch, data) for name, config in configs.items()}
  best = {name: {epoch: np.inf for epoch in EPOCHS} for name in configs}
  for epoch in EPOCHS:
    if epoch != "outside":  # the first step of an epoch (a selection, say) is untimed
      for trainer in trainers.values():
        trainer.run(0, 1)
        trainer.wait()
    for _ in range(repeats):
      for name, trainer in trainers.items():
        start = time.perf_counter()
        trainer.run(0, steps)
        trainer.wait()
        best[name][epoch] = min(best[name][epoch], (time.perf_counter() - start) / steps)
  return best, {name: state_megabytes(t.state) for name, t in trainers.items()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet20")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per turn (one call)")
  parser.add_argument("--repeats", type=int, default=5, help="turns per variant and phase")
  args = parser.parse_args()
  data = input_pipeline.to_device(synthetic_split(args.steps * args.batch_size))
  print(
    f"{args.model}, batch {args.batch_size}, {jax.devices()[0].device_kind} "
    f"x{jax.device_count()}, JAX {jax.__version__}"
  )
  configs = {}
  for name, (amp, track) in VARIANTS.items():
    config = default.get_config()
    config.model, config.batch_size = args.model, args.batch_size
    config.phases = ((1, 0.1, 0, 1), (3, 0.1, 1, 2))
    config.track_directionality = track
    config.amplification.update(amp)
    configs[name] = config
  results, megabytes = time_all(configs, data, args.steps, args.repeats)
  base = results["none"]
  print(
    "| method | "
    + " | ".join(f"{e}, ms/step | ratio" for e in EPOCHS)
    + " | optimizer state, MiB |"
  )
  print("|---|" + "---:|---:|" * len(EPOCHS) + "---:|")
  for name, t in results.items():
    cells = " | ".join(f"{1e3 * t[e]:.1f} | {t[e] / base[e]:.3f}" for e in EPOCHS)
    print(f"| {name} | {cells} | {megabytes[name]:.2f} |")


if __name__ == "__main__":
  main()
