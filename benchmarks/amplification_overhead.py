"""Cost of amplification per training step, side by side in one process.

    python benchmarks/amplification_overhead.py --model resnet20 --batch_size 128

Times the jitted training step of the same model and batch with every amplification
method (no amplification, G, G′, random, matched random) while the step is amplifying
(after the analysis epoch) and while it is analysing, and prints each time relative to
no amplification. The paper reports 0.05–4.8 % overhead in training time (V100).
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import default  # noqa: E402
from gradamp_jax import train  # noqa: E402

VARIANTS = {
    "none": dict(method="none"),
    "G": dict(method="intelligent", measure="G"),
    "G_prime": dict(method="intelligent", measure="G_prime"),
    "random": dict(method="random"),
    "matched_random (G_prime)": dict(method="matched_random", measure="G_prime"),
}


def time_step(config, batch, steps, repeats):
  # steps_per_epoch=steps: epoch 1 is analysed, epoch 2 amplified.
  tx = train.create_optimizer(config, steps_per_epoch=steps)
  graphdef, state = train.create_train_state(config, 10, tx)
  step = jax.jit(train.make_train_step(graphdef, tx), donate_argnums=0)
  state, _ = step(state, batch)  # compile
  jax.block_until_ready(state)
  timings = {}
  for phase in ("analysis", "amplified"):
    best = np.inf
    for _ in range(repeats):
      start = time.perf_counter()
      for _ in range(steps // repeats):
        state, metrics = step(state, batch)
      jax.block_until_ready(state)
      best = min(best, (time.perf_counter() - start) / (steps // repeats))
    timings[phase] = best
  return timings


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet20")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=30, help="steps per epoch timed")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  batch = dict(image=jnp.asarray(rng.normal(size=(args.batch_size, 32, 32, 3)), jnp.float32),
               label=jnp.asarray(rng.integers(0, 10, args.batch_size), jnp.int32))
  print(f"{args.model}, batch {args.batch_size}, {jax.devices()[0].device_kind} "
        f"x{jax.device_count()}, JAX {jax.__version__}")
  results = {}
  for name, amp in VARIANTS.items():
    config = default.get_config()
    config.model = args.model
    config.phases = ((2, 0.1, 1, 2),)
    config.amplification.update(amp)
    results[name] = time_step(config, batch, args.steps, repeats=3)
  base = results["none"]
  print(f"{'method':26s} {'analysis ms':>12s} {'ratio':>7s} {'amplified ms':>13s} {'ratio':>7s}")
  for name, t in results.items():
    print(f"{name:26s} {1e3 * t['analysis']:12.2f} {t['analysis'] / base['analysis']:7.3f} "
          f"{1e3 * t['amplified']:13.2f} {t['amplified'] / base['amplified']:7.3f}")


if __name__ == "__main__":
  main()
