"""What a gradient factor becomes under Adam: the amplified-to-plain update ratio over time.

    python benchmarks/adam_factor_decay.py --out docs/adam_factor_decay.png

One layer of 1,000 weights receives a stationary stream of gradients (each weight a mean
``--mean`` plus unit Gaussian noise, the same draws for both runs); Adam (b1 0.9, eps 1e-8)
runs with ``ga.amplify`` around it, every layer selected from step ``H = 3 / (1 - b2)``
with factor 2, once amplifying gradients and once updates, beside a plain Adam. Printed:
the ratio ``||update|| / ||plain update||`` at the first amplified step, its peak, and the
steps after which it stays below 1.5, 1.1 and 1.01, for each b2; the largest deviation of
the updates placement from exactly 2. Under the closed form for a constant gradient
(docs/method.md §9) the ratio after ``n`` steps is
``(b1^n + (1 - b1^n) a) / sqrt(b2^n + (1 - b2^n) a^2)``.
"""

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import gradamp_jax as ga  # noqa: E402

B2S = (0.99, 0.999, 0.9999)
FACTOR, B1, SIZE = 2.0, 0.9, 1000


def ratios(b2: float, mean: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, int]:
  """Update-norm ratios (gradients placement, updates placement) per step from the switch."""
  history = int(round(3 / (1 - b2)))
  after = int(round(10 / (1 - b2)))
  phases = [(1, 1e-3, 0, 1), (1 + -(-after // history), 1e-3, 1, FACTOR)]
  steps = history * ga.num_epochs(phases)
  params = {"layer": {"w": jnp.zeros((SIZE,))}}
  adam = optax.adam(1e-3, b1=B1, b2=b2, eps=1e-8)
  amp = lambda: ga.random_amplification(phases, history, ratio=1.0, wait_first_epoch=False)
  txs = [adam, ga.amplify(adam, amp()), ga.amplify(adam, amp(), where="updates")]

  def step(states, key):
    g = {"layer": {"w": mean + jax.random.normal(key, (SIZE,))}}
    norms, new = [], []
    for tx, state in zip(txs, states):
      u, state = tx.update(g, state, params)
      norms.append(jnp.linalg.norm(u["layer"]["w"]))
      new.append(state)
    return tuple(new), jnp.stack(norms)

  keys = jax.random.split(jax.random.PRNGKey(seed), steps)
  _, norms = jax.jit(lambda s, k: jax.lax.scan(step, s, k))(
    tuple(tx.init(params) for tx in txs), keys
  )
  norms = np.asarray(norms)[history:]
  return norms[:, 1] / norms[:, 0], norms[:, 2] / norms[:, 0], history


def below(ratio: np.ndarray, level: float) -> str:
  """Steps after the switch from which the ratio stays below ``level``."""
  above = np.flatnonzero(ratio >= level)
  if not len(above):
    return "0"
  return f"{above[-1] + 1:,}" if above[-1] + 1 < len(ratio) else f"> {len(ratio):,}"


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--mean", type=float, default=0.1, help="gradient mean per weight")
  parser.add_argument("--out", default=None, help="PNG of the curves")
  args = parser.parse_args()
  print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}; mean {args.mean}, noise 1")
  print(
    "| b2 | history (steps) | ratio at step 1 | peak (step) | < 1.5 after | < 1.1 after "
    "| < 1.01 after | updates placement: max abs(ratio - 2) |"
  )
  print("|---|---|---|---|---|---|---|---|")
  curves = {}
  for b2 in B2S:
    by_grad, by_update, history = ratios(b2, args.mean)
    curves[b2] = by_grad
    peak = int(np.argmax(by_grad))
    print(
      f"| {b2} | {history:,} | {by_grad[0]:.3f} | {by_grad[peak]:.3f} ({peak + 1}) "
      f"| {below(by_grad, 1.5)} | {below(by_grad, 1.1)} | {below(by_grad, 1.01)} "
      f"| {np.max(np.abs(by_update - FACTOR)):.1e} |"
    )
  if args.out:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for b2, curve in curves.items():
      ax.plot(np.arange(1, len(curve) + 1), curve, label=f"gradients ×2, b2 = {b2}")
    ax.axhline(FACTOR, color="0.3", linestyle="--", label="updates ×2 (every b2)")
    ax.axhline(1.0, color="0.6", linestyle=":")
    ax.set_xscale("log")
    ax.set_xlabel("steps since the factor switched on")
    ax.set_ylabel("||amplified update|| / ||plain update||")
    ax.set_title(f"Adam, stationary gradients (mean {args.mean}, noise 1 per weight)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
