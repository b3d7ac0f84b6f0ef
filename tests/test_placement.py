"""Where the factor applies (ga.amplify): placements against NumPy and closed forms, under
SGD, SGD with momentum, Adam, LAMB and LARS, and resumption under each optimizer."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from test_amplification import make_params, random_grads
from test_train import assert_resuming_epoch_3_is_bitwise, mock_cifar, tiny_config

import gradamp_jax as ga
from configs import default
from gradamp_jax.training import config_fields, optimizer, train

SPE = 2
PHASES = [(1, 0.1, 0, 1), (3, 0.1, 1, 2), (4, 0.1, 0, 1)]  # selection at step 4, off at 6
SHAPES = [[(3, 2), (2,)], [(4,)], [(2, 2)]]
BIAS = [1.5, 0.0, -0.2]  # layer0 has direction: G′ case 1 selects it alone


def selector():
  return ga.intelligent_amplification(PHASES, SPE, measure="G_prime", case=1, threshold=0.5)


def updates_of(tx, params, grads):
  """Updates of ``tx`` on a fixed ``params`` (not applied), as NumPy trees, and the state."""
  update, state, outs = jax.jit(tx.update), tx.init(params), []
  for g in grads:
    u, state = update(g, state, params)
    outs.append(jax.tree.map(np.asarray, u))
  return outs, state


def factors(state, params, steps):
  """The factor of each layer at each step, from the selection the transform reports:
  2 for selected layers during steps 4-5 (epoch 3), 1 elsewhere."""
  rows = ga.selection_report(state, params)
  selected = np.array([r["selected"] for r in rows])
  assert selected.tolist() == [True, False, False]
  on = np.array([4 <= t < 6 for t in range(steps)])
  return np.where(on[:, None] & selected[None, :], 2.0, 1.0)


def layer_leaves(tree, layer):
  return jax.tree.leaves(tree[f"layer{layer}"])


@pytest.fixture
def stream():
  params = make_params(SHAPES)
  params = jax.tree.map(lambda x: x + 0.5, params)  # non-zero weights for trust ratios
  grads = random_grads(params, np.random.default_rng(0), 8, bias=BIAS)
  return params, grads


def test_sgd_without_momentum_both_placements_give_the_factor_times_the_step(stream):
  params, grads = stream
  by_grad, state = updates_of(ga.amplify(optax.sgd(0.1), selector()), params, grads)
  by_update, _ = updates_of(ga.amplify(optax.sgd(0.1), selector(), where="updates"), params, grads)
  scale = factors(state, params, len(grads))
  for t, g in enumerate(grads):
    for layer in range(len(SHAPES)):
      for a, b, x in zip(
        layer_leaves(by_grad[t], layer), layer_leaves(by_update[t], layer), layer_leaves(g, layer)
      ):
        want = -0.1 * scale[t, layer] * np.asarray(x)
        np.testing.assert_allclose(a, want, rtol=1e-6)
        np.testing.assert_allclose(b, want, rtol=1e-6)


def test_gradients_placement_equals_chaining_before_the_optimizer(stream):
  params, grads = stream
  sgd = optax.sgd(0.1, momentum=0.9)
  wrapped, _ = updates_of(ga.amplify(sgd, selector()), params, grads)
  chained, _ = updates_of(optax.chain(selector(), sgd), params, grads)
  for a, b in zip(jax.tree.leaves(wrapped), jax.tree.leaves(chained)):
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_sgd_momentum_placements_differ_by_the_momentum_carried_across_selection_changes(stream):
  # Plain momentum M_t = sum_k mu^(t-k) g_k. Gradients placement steps with
  # sum_k mu^(t-k) a_k g_k; updates placement with a_t M_t. From the step s a selection
  # starts, (updates - gradients) = -lr (a - 1) mu^(t-s+1) M_(s-1): the momentum of the
  # un-amplified past gets the factor too. After it ends (step e), the gradients
  # placement keeps the amplified past: (updates - gradients) = +lr (a - 1)
  # sum_(s<=k<e) mu^(t-k) g_k, decaying as mu^(t-e+1).
  params, grads = stream
  lr, mu, a, s, e = 0.1, 0.9, 2.0, 4, 6
  sgd = optax.sgd(lr, momentum=mu)
  by_grad, state = updates_of(ga.amplify(sgd, selector()), params, grads)
  by_update, _ = updates_of(ga.amplify(sgd, selector(), where="updates"), params, grads)
  scale = factors(state, params, len(grads))
  g0 = np.stack([np.asarray(layer_leaves(g, 0)[0]) for g in grads])  # layer0's kernel
  plain = [sum(mu ** (t - k) * g0[k] for k in range(t + 1)) for t in range(len(grads))]
  amplified = [
    sum(mu ** (t - k) * scale[k, 0] * g0[k] for k in range(t + 1)) for t in range(len(grads))
  ]
  for t in range(len(grads)):
    np.testing.assert_allclose(layer_leaves(by_grad[t], 0)[0], -lr * amplified[t], rtol=1e-5)
    np.testing.assert_allclose(
      layer_leaves(by_update[t], 0)[0], -lr * scale[t, 0] * plain[t], rtol=1e-5
    )
    diff = layer_leaves(by_update[t], 0)[0] - layer_leaves(by_grad[t], 0)[0]
    if t < s:
      want = np.zeros_like(g0[0])
    elif t < e:
      want = -lr * (a - 1) * mu ** (t - s + 1) * plain[s - 1]
    else:
      want = lr * (a - 1) * sum(mu ** (t - k) * g0[k] for k in range(s, e))
    np.testing.assert_allclose(diff, want, rtol=1e-4, atol=1e-6)
    # Layers never selected: the placements agree.
    np.testing.assert_allclose(
      layer_leaves(by_update[t], 1)[0], layer_leaves(by_grad[t], 1)[0], rtol=1e-6
    )


def numpy_adam(grads, b1, b2, eps, lr):
  m = v = 0.0
  out = []
  for t, g in enumerate(grads, start=1):
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    out.append(-lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps))
  return np.array(out)


def test_adam_gradient_factor_rises_then_decays_to_one_updates_factor_is_exact():
  # A stationary stream (the same gradient every step): Adam's update does not depend on
  # the gradient's scale, so a factor switched on at step s shows only until m and v
  # have caught up: ratio ~ (b1^n + (1 - b1^n) a) / sqrt(b2^n + (1 - b2^n) a^2) after n
  # steps (docs/method.md §9).
  b1, b2, eps, lr, spe = 0.9, 0.99, 1e-8, 1e-3, 50
  phases = [(1, lr, 0, 1), (12, lr, 1, 2)]  # analysis epoch 2, amplified epochs 3-12
  params = {"layer0": {"w": jnp.zeros((3,))}, "layer1": {"w": jnp.zeros((2,))}}
  grad = {"layer0": {"w": jnp.asarray([1.0, 1.0, 1.0])}, "layer1": {"w": jnp.asarray([0.3, -2.0])}}
  grads = [grad] * (12 * spe)

  def tx(where):
    amp = ga.random_amplification(phases, spe, ratio=1.0)  # every layer from step 2 * spe
    return ga.amplify(optax.adam(lr, b1=b1, b2=b2, eps=eps), amp, where=where)

  plain, _ = updates_of(optax.adam(lr, b1=b1, b2=b2, eps=eps), params, grads)
  by_grad, _ = updates_of(tx("gradients"), params, grads)
  by_update, _ = updates_of(tx("updates"), params, grads)
  start = 2 * spe
  factor = np.array([2.0 if t >= start else 1.0 for t in range(len(grads))])
  want = numpy_adam(factor * 1.0, b1, b2, eps, lr) / numpy_adam(
    np.ones(len(grads)), b1, b2, eps, lr
  )
  ratio = np.array([u["layer0"]["w"][0] / p["layer0"]["w"][0] for u, p in zip(by_grad, plain)])
  np.testing.assert_allclose(ratio, want, rtol=1e-4)
  np.testing.assert_allclose(ratio[:start], 1.0, rtol=1e-6)
  peak = int(np.argmax(ratio))
  assert ratio[start] < 1.1 and ratio[peak] > 1.4 and start < peak < start + 30  # m catches up
  assert ratio[-1] < 1.005  # v catches up: the factor is gone
  exact = np.array([u["layer1"]["w"] / p["layer1"]["w"] for u, p in zip(by_update, plain)])
  np.testing.assert_allclose(exact, factor[:, None] * np.ones((1, 2)), rtol=1e-6)


def test_lars_cancels_a_gradient_factor_per_layer(stream):
  params, grads = stream
  lars = lambda: optax.lars(0.1, weight_decay=0.0, momentum=0.9)
  plain, _ = updates_of(lars(), params, grads)
  by_grad, state = updates_of(ga.amplify(lars(), selector()), params, grads)
  by_update, _ = updates_of(ga.amplify(lars(), selector(), where="updates"), params, grads)
  scale = factors(state, params, len(grads))
  for t in range(len(grads)):
    for p, a, b, layer in zip(
      jax.tree.leaves(plain[t]),
      jax.tree.leaves(by_grad[t]),
      jax.tree.leaves(by_update[t]),
      ga.layer_index(params).leaf_layer,
    ):
      np.testing.assert_allclose(a, p, rtol=1e-5, atol=1e-8)  # the factor is gone
      np.testing.assert_allclose(b, scale[t, layer] * p, rtol=1e-5, atol=1e-8)


def test_lamb_update_norm_per_leaf_ignores_a_gradient_factor(stream):
  # LAMB's update of a leaf is lr * ||w|| * u / ||u||: its norm is lr * ||w|| whatever
  # the gradients' scale; updates placement multiplies it.
  params, grads = stream
  lamb = lambda: optax.lamb(0.1, weight_decay=0.0)
  by_grad, state = updates_of(ga.amplify(lamb(), selector()), params, grads)
  by_update, _ = updates_of(ga.amplify(lamb(), selector(), where="updates"), params, grads)
  scale = factors(state, params, len(grads))
  index = ga.layer_index(params)
  for t in range(len(grads)):
    for w, a, b, layer in zip(
      jax.tree.leaves(params),
      jax.tree.leaves(by_grad[t]),
      jax.tree.leaves(by_update[t]),
      index.leaf_layer,
    ):
      norm = 0.1 * np.linalg.norm(np.asarray(w))
      np.testing.assert_allclose(np.linalg.norm(a), norm, rtol=1e-5)
      np.testing.assert_allclose(np.linalg.norm(b), scale[t, layer] * norm, rtol=1e-5)


def config_for(name, where):
  config = default.get_config()
  config.optimizer = name
  config.phases = tuple(PHASES)
  config.amplification.update(measure="G_prime", case=1, threshold=0.5, where=where)
  return config


@pytest.mark.parametrize("name", optimizer.OPTIMIZERS)
@pytest.mark.parametrize("where", ga.amplification.PLACEMENTS)
def test_restored_mid_phase_state_continues_bitwise_for_each_optimizer(tmp_path, name, where):
  params, grads = make_params(SHAPES), None
  params = jax.tree.map(lambda x: x + 0.5, params)
  grads = random_grads(params, np.random.default_rng(1), 8, bias=BIAS)
  tx = optimizer.create_optimizer(config_for(name, where), SPE)
  update = jax.jit(tx.update)
  state = tx.init(params)
  for g in grads[:5]:  # inside the amplified epoch
    _, state = update(g, state, params)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "state", state)
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(tmp_path / "state", jax.tree.map(np.zeros_like, state))
  assert ga.selection_report(restored, params) == ga.selection_report(state, params)
  a, b = state, restored
  for g in grads[5:]:
    out_a, a = update(g, a, params)
    out_b, b = update(g, b, params)
    for x, y in zip(jax.tree.leaves((out_a, a)), jax.tree.leaves((out_b, b))):
      np.testing.assert_array_equal(x, y)


def test_both_placements_have_one_state_layout():
  params = make_params(SHAPES)
  layouts = [
    jax.tree.structure(optimizer.create_optimizer(config_for("adamw", w), SPE).init(params))
    for w in ga.amplification.PLACEMENTS
  ]
  assert layouts[0] == layouts[1]


def test_bad_placement_is_refused():
  with pytest.raises(ValueError, match="where must be one of"):
    ga.amplify(optax.sgd(0.1), selector(), where="params")


@pytest.mark.parametrize(
  "name, where, warned",
  [
    ("sgd", "gradients", None),
    ("adamw", "updates", None),
    ("adamw", "gradients", "transient"),
    ("lamb", "gradients", "cancelled"),
    ("lars", "gradients", "cancelled"),
  ],
)
def test_gradient_placement_under_adaptive_optimizers_warns_in_one_line(name, where, warned):
  config = config_for(name, where)
  config_fields.validate_config(config)
  message = optimizer.placement_warning(config)
  if warned is None:
    assert message is None
  else:
    assert warned in message and "amplification.where='updates'" in message
    assert "\n" not in message
  config.amplification.method = "none"
  assert optimizer.placement_warning(config) is None


@pytest.mark.slow
def test_training_program_resumes_adamw_with_updates_placement_bitwise(tmp_path):
  config = tiny_config(where="updates")
  config.optimizer, config.weight_decay = "adamw", 0.05
  config.phases = ((1, 1e-3, 0, 1), (3, 1e-3, 1, 2))
  full = str(tmp_path / "full")
  with mock_cifar():
    train.train_and_evaluate(config, full)
  assert_resuming_epoch_3_is_bitwise(config, full, str(tmp_path / "resumed"))
  with open(os.path.join(full, "config.json")) as f:
    recorded = json.load(f)
  assert (recorded["optimizer"], recorded["amplification"]["where"]) == ("adamw", "updates")
