"""Cost of amplification per training step, side by side in one process.

    python benchmarks/amplification_overhead.py --model resnet20 --batch_size 128

Times the training program's jitted step (``train.make_train_step``) on the same model and
batch with every amplification method (none, G, G′, random, matched random), first in the
analysis epoch and then while amplifying, the variants taking turns; prints the best time
per step of each and its ratio to no amplification. The paper reports 0.05–4.8 % overhead in training time (V100).
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


def build(config, steps_per_epoch, batch):
  """Compiled step and a state after its first (compiling) update."""
  tx = train.create_optimizer(config, steps_per_epoch)
  graphdef, state = train.create_train_state(config, 10, tx)
  step = jax.jit(train.make_train_step(graphdef, tx), donate_argnums=0)
  state, _ = step(state, batch)
  return step, jax.block_until_ready(state)


def time_all(configs, batch, steps, repeats):
  """Best seconds per step of every variant, in the analysis epoch and then in the amplified
  one; the variants take turns within each repeat so that machine noise hits all alike."""
  steps_per_epoch = 1 + steps * repeats  # epoch 1: compile step + timed analysis steps
  built = {name: build(config, steps_per_epoch, batch) for name, config in configs.items()}
  states = {name: state for name, (_, state) in built.items()}
  best = {name: {"analysis": np.inf, "amplified": np.inf} for name in configs}
  for phase in ("analysis", "amplified"):
    if phase == "amplified":  # step 1 of epoch 2 makes the selection; leave it untimed
      for name, (step, _) in built.items():
        states[name] = jax.block_until_ready(step(states[name], batch)[0])
    for _ in range(repeats):
      for name, (step, _) in built.items():
        start = time.perf_counter()
        for _ in range(steps):
          states[name], _ = step(states[name], batch)
        jax.block_until_ready(states[name])
        best[name][phase] = min(best[name][phase], (time.perf_counter() - start) / steps)
  return best


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", default="resnet20")
  parser.add_argument("--batch_size", type=int, default=128)
  parser.add_argument("--steps", type=int, default=5, help="timed steps per turn")
  parser.add_argument("--repeats", type=int, default=5, help="turns per variant and phase")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  batch = dict(image=jnp.asarray(rng.normal(size=(args.batch_size, 32, 32, 3)), jnp.float32),
               label=jnp.asarray(rng.integers(0, 10, args.batch_size), jnp.int32))
  print(f"{args.model}, batch {args.batch_size}, {jax.devices()[0].device_kind} "
        f"x{jax.device_count()}, JAX {jax.__version__}")
  configs = {}
  for name, amp in VARIANTS.items():
    config = default.get_config()
    config.model = args.model
    config.phases = ((2, 0.1, 1, 2),)
    config.amplification.update(amp)
    configs[name] = config
  results = time_all(configs, batch, args.steps, args.repeats)
  base = results["none"]
  print(f"{'method':26s} {'analysis ms':>12s} {'ratio':>7s} {'amplified ms':>13s} {'ratio':>7s}")
  for name, t in results.items():
    print(f"{name:26s} {1e3 * t['analysis']:12.2f} {t['analysis'] / base['analysis']:7.3f} "
          f"{1e3 * t['amplified']:13.2f} {t['amplified'] / base['amplified']:7.3f}")


if __name__ == "__main__":
  main()
