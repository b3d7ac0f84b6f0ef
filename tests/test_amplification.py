"""The amplification transforms against the NumPy reading in reference.py and hand values."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from flax import nnx
from hypothesis import given, settings
from hypothesis import strategies as st

import gradamp_jax as ga

PHASES = [(1, 0.1, 0, 1), (3, 0.1, 1, 2), (4, 0.01, 1, 3), (5, 0.01, 0, 1)]


def make_params(shapes, dtype=jnp.float32):
  return {
    f"layer{i}": {f"w{j}": jnp.zeros(s, dtype) for j, s in enumerate(layer)}
    for i, layer in enumerate(shapes)
  }


def random_grads(params, rng, steps, bias=None):
  """A list of gradient trees; ``bias`` adds a per-layer drift to give layers direction."""
  out = []
  for _ in range(steps):
    tree = {}
    for i, (name, leaves) in enumerate(sorted(params.items())):
      drift = 0.0 if bias is None else bias[i]
      tree[name] = {
        k: jnp.asarray(rng.normal(size=v.shape) + drift, v.dtype) for k, v in leaves.items()
      }
    out.append(tree)
  return out


def run(tx, params, grads, jit=True):
  state = tx.init(params)
  update = jax.jit(tx.update) if jit else tx.update
  outs = []
  for g in grads:
    out, state = update(g, state)
    outs.append(out)
  return outs, state


def traced_step(tx):
  """A jitted ``(params, opt_state, grads) -> (params, opt_state)`` step of ``tx`` and the
  list that gets one entry per trace (compilation)."""
  traces = []

  @jax.jit
  def step(params, state, g):
    traces.append(None)
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state

  return step, traces


def observed_scales(grads, outs, num_layers):
  """Factor applied per layer, read off output/input of the first leaf of each layer."""
  scales = []
  for g, o in zip(grads, outs):
    row = []
    for i in range(num_layers):
      gi = jax.tree.leaves(g[f"layer{i}"])[0]
      oi = jax.tree.leaves(o[f"layer{i}"])[0]
      row.append(float(np.asarray(oi).ravel()[0] / np.asarray(gi).ravel()[0]))
    scales.append(row)
  return np.array(scales)


# ----------------------------------------------------------------------------- phases


def test_parse_phases_accepts_paper_strategy():
  parsed = ga.parse_phases(
    [(50, 0.1, 0, 1), (100, 0.1, 1, 2), (130, 0.01, 1, 2), (150, 0.01, 0, 1)]
  )
  assert parsed[1] == ga.Phase(100, 0.1, True, 2.0)
  assert [p.factor for p in parsed] == [1.0, 2.0, 2.0, 1.0]
  assert ga.num_epochs(parsed) == 150
  assert ga.parse_phases(parsed) == parsed


@pytest.mark.parametrize(
  "phases, message",
  [
    ([], "at least one phase"),
    ([(2, 0.1, 0, 1), (2, 0.1, 1, 2)], r"phases\[1\].*strictly increase"),
    ([(3, 0.1, 0, 1), (2, 0.1, 1, 2)], r"phases\[1\].*strictly increase"),
    ([(0, 0.1, 0, 1)], r"phases\[0\].*end_epoch"),
    ([(1.5, 0.1, 0, 1)], r"phases\[0\].*end_epoch"),
    ([(1, 0.0, 0, 1)], r"phases\[0\].*learning_rate"),
    ([(1, float("nan"), 0, 1)], r"phases\[0\].*learning_rate"),
    ([(1, 0.1, 1, float("inf"))], r"phases\[0\].*amp_factor"),
    ([(1, 0.1, 1, -2)], r"phases\[0\].*amp_factor"),
    ([(1, 0.1, 1)], r"phases\[0\].*end_epoch, learning_rate, is_amp, amp_factor"),
    ("(1, 0.1, 0, 1)", "sequence of 4-tuples"),
  ],
)
def test_parse_phases_rejects_bad_input(phases, message):
  with pytest.raises(ValueError, match=message):
    ga.parse_phases(phases)


def test_learning_rate_schedule_is_piecewise_constant_per_epoch():
  lr = ga.learning_rate_schedule([(2, 0.1, 0, 1), (3, 0.01, 1, 2), (5, 0.001, 0, 1)], 4)
  steps = np.arange(24)
  expected = np.where(steps < 8, 0.1, np.where(steps < 12, 0.01, 0.001))
  np.testing.assert_allclose(jax.vmap(lr)(steps), expected, rtol=1e-6)
  np.testing.assert_allclose(jax.jit(lr)(9), 0.01, rtol=1e-6)


def test_steps_per_epoch_must_be_positive():
  with pytest.raises(ValueError, match="steps_per_epoch"):
    ga.learning_rate_schedule(PHASES, 0)
  with pytest.raises(ValueError, match="steps_per_epoch"):
    ga.intelligent_amplification(PHASES, 0)


# ----------------------------------------------------------------------------- layers


def test_layer_names_linen_dict():
  params = {
    "params": {
      "Conv_0": {"kernel": 1, "bias": 1},
      "BatchNorm_0": {"scale": 1, "bias": 1},
      "Dense_0": {"kernel": 1},
    }
  }
  assert ga.layer_names(params["params"]) == ("BatchNorm_0", "Conv_0", "Dense_0")
  assert ga.layer_names(params) == ("params/BatchNorm_0", "params/Conv_0", "params/Dense_0")
  index = ga.layer_index(params["params"])
  assert index.leaf_layer == (0, 0, 1, 1, 2)
  assert index.param_names[1] == ("bias", "kernel")


class Tiny(nnx.Module):
  def __init__(self, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), rngs=rngs)
    self.bn = nnx.BatchNorm(4, rngs=rngs)
    self.blocks = nnx.List([nnx.Linear(4, 4, rngs=rngs), nnx.Linear(4, 2, rngs=rngs)])

  def __call__(self, x):
    x = nnx.relu(self.bn(self.conv(x), use_running_average=True))
    x = x.mean(axis=(1, 2))
    for block in self.blocks:
      x = block(x)
    return x


def test_layer_names_nnx_state_excludes_batch_stats():
  model = Tiny(nnx.Rngs(0))
  state = nnx.state(model, nnx.Param)
  assert ga.layer_names(state) == ("blocks/0", "blocks/1", "bn", "conv")
  assert ga.layer_index(state).layer_sizes() == (20, 10, 8, 3 * 3 * 3 * 4 + 4)


def test_network_order_follows_the_forward_pass():
  model = Tiny(nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  x = jnp.zeros((1, 5, 5, 3))
  order = ga.layers.network_order(lambda p: nnx.merge(graphdef, p, rest)(x), params)
  assert order == ("conv", "bn", "blocks/0", "blocks/1")
  # A layer the function never touches comes last.
  unused = {"a": {"w": jnp.ones(2)}, "b": {"w": jnp.ones(2)}, "c": {"w": jnp.ones(2)}}
  fn = lambda p: jnp.sin(p["c"]["w"]) * p["a"]["w"]
  assert ga.layers.network_order(fn, unused) == ("c", "a", "b")


def test_leaf_at_root_has_no_layer():
  with pytest.raises(ValueError, match="not inside a module"):
    ga.layer_names({"kernel": jnp.zeros(3)})


# ----------------------------------------------------------------------------- measures


def test_measures_by_hand():
  # Layer of two weights over three steps: weight a moves +1, +1, -1; weight b 2, 2, 2.
  signed = jnp.array([1.0 + 6.0])
  absolute = jnp.array([3.0 + 6.0])
  np.testing.assert_allclose(ga.directionality_g(signed, absolute), [7 / 9])
  # G' = mean(|1|/3, 6/6) = 2/3.
  gp = ga.directionality_g_prime([jnp.array([1.0, 6.0])], [jnp.array([3.0, 6.0])], (0,), 1)
  np.testing.assert_allclose(gp, [2 / 3], rtol=1e-6)
  # All moves negative: G is 1, not -1 (docs/method.md §3).
  np.testing.assert_allclose(ga.directionality_g(jnp.array([-5.0]), jnp.array([5.0])), [1.0])


def test_zero_gradients_give_zero_not_nan():
  np.testing.assert_array_equal(ga.directionality_g(jnp.zeros(2), jnp.zeros(2)), [0.0, 0.0])
  gp = ga.directionality_g_prime([jnp.zeros(3)], [jnp.zeros(3)], (0,), 1)
  np.testing.assert_array_equal(gp, [0.0])


def test_normalize_matches_numpy_population_zscore():
  values = np.array([0.2, 0.5, 0.9, 0.4, 0.7])
  eligible = np.array([True, True, False, True, True])
  np.testing.assert_allclose(
    ga.normalize(values, eligible), reference.zscore(values, eligible), rtol=1e-5, atol=1e-6
  )


@pytest.mark.parametrize(
  "values, eligible",
  [
    ([0.3], [True]),  # one eligible layer
    ([0.4, 0.4, 0.4], [True] * 3),  # all equal
    ([0.4, 0.9, 0.4], [True, False, True]),  # eligible ones equal
    ([0.5, 0.5 + 1e-8, 0.5], [True] * 3),  # std below tolerance
  ],
)
def test_degenerate_normalization_is_zero(values, eligible):
  z = ga.normalize(jnp.asarray(values), jnp.asarray(eligible))
  np.testing.assert_array_equal(z, np.zeros(len(values)))
  assert not ga.select_layers(z, jnp.asarray(eligible), case=2, threshold=0.5).any()


def test_case_rules():
  z = jnp.array([2.0, -2.0, 0.5, 1.2])
  elig = jnp.array([True, True, True, False])
  np.testing.assert_array_equal(
    ga.select_layers(z, elig, case=1, threshold=1.0), [True, False, False, False]
  )
  np.testing.assert_array_equal(
    ga.select_layers(z, elig, case=2, threshold=1.0), [True, True, False, False]
  )


# ----------------------------------------------------------------------------- the transforms

layer_shapes = st.lists(
  st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4)), min_size=1, max_size=2),
  min_size=2,
  max_size=5,
)


# An amplified phase of 6 epochs, so that re-selection every 1 or 2 epochs and once per
# phase give different schedules, then a short one with another factor.
LONG_PHASES = [(1, 0.1, 0, 1), (7, 0.1, 1, 2), (9, 0.01, 1, 3), (10, 0.01, 0, 1)]


@settings(max_examples=15, deadline=None)
@given(
  shapes=layer_shapes,
  seed=st.integers(0, 2**16),
  spe=st.integers(1, 3),
  measure=st.sampled_from(["G", "G_prime"]),
  case=st.sampled_from([1, 2]),
  threshold=st.floats(0.0, 1.5),
  reselect=st.sampled_from([None, 1, 2]),
  eligible_bits=st.lists(st.booleans(), min_size=5, max_size=5),
  control=st.sampled_from([None, "matched_random"]),
  track=st.booleans(),
)
def test_schedule_matches_numpy_reference(
  shapes, seed, spe, measure, case, threshold, reselect, eligible_bits, control, track
):
  params = make_params(shapes)
  num_layers = len(shapes)
  eligible = eligible_bits[:num_layers]
  if not any(eligible):
    eligible[seed % num_layers] = True
  rng = np.random.default_rng(seed)
  bias = rng.uniform(-1.5, 1.5, size=num_layers)
  steps = 10 * spe + 2  # runs past the end of the strategy
  grads = random_grads(params, rng, steps, bias)
  tx = ga.intelligent_amplification(
    LONG_PHASES,
    spe,
    measure=measure,
    case=case,
    threshold=threshold,
    reselect_every=reselect,
    control=control,
    seed=seed,
    track_directionality=track,
    eligible=lambda name: eligible[int(name.removeprefix("layer"))],
  )
  outs, state = run(tx, params, grads)
  index = ga.layer_index(params)
  kwargs = dict(
    measure=measure, case=case, threshold=threshold, reselect_every=reselect, eligible=eligible
  )
  leaves = [jax.tree.leaves(g) for g in grads]
  expected = reference.expected_scales(
    LONG_PHASES, spe, leaves, index.leaf_layer, num_layers, **kwargs
  )
  observed = observed_scales(grads, outs, num_layers)
  if control is None:
    np.testing.assert_allclose(observed, expected, rtol=1e-6)
  else:  # as many layers as the rule picked, eligible ones only, at the phase's factor
    for got, want in zip(observed, expected):
      amplified = got != 1.0
      assert amplified.sum() == np.sum(want != 1.0)
      assert np.all(np.asarray(eligible)[amplified])
      np.testing.assert_allclose(got[amplified], np.max(want), rtol=1e-6)
  assert int(state.num_selections) == sum(
    len(reference.windows_of_phase(start, end, reselect)) for start, end in ((2, 7), (8, 9))
  )


@settings(max_examples=10, deadline=None)
@given(shapes=layer_shapes, seed=st.integers(0, 2**16), spe=st.integers(1, 3))
def test_monitor_matches_numpy_reference_every_epoch(shapes, seed, spe):
  params = make_params(shapes)
  rng = np.random.default_rng(seed)
  grads = random_grads(params, rng, 3 * spe + 1, rng.uniform(-1.5, 1.5, size=len(shapes)))
  index = ga.layer_index(params)
  expected = reference.epoch_measures(
    [jax.tree.leaves(g) for g in grads], spe, index.leaf_layer, index.num_layers
  )
  tx = ga.directionality_monitor(spe)
  state = tx.init(params)
  update = jax.jit(tx.update)
  for t, g in enumerate(grads):
    out, state = update(g, state)
    chex.assert_trees_all_equal(out, g)  # passes the gradients through
    report = ga.directionality_report(state, params)
    finished = (t + 1) // spe
    if finished == 0:
      assert report == []
      continue
    assert {r["epoch"] for r in report} == {finished}
    assert [r["layer"] for r in report] == list(index.names)
    g_want, gp_want = expected[finished - 1]
    np.testing.assert_allclose([r["G"] for r in report], g_want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["G_prime"] for r in report], gp_want, rtol=1e-5, atol=1e-6)


@settings(max_examples=10, deadline=None)
@given(shapes=layer_shapes, seed=st.integers(0, 2**16), scale=st.floats(1e-3, 1e3))
def test_measures_bounded_and_scale_invariant(shapes, seed, scale):
  params = make_params(shapes)
  rng = np.random.default_rng(seed)
  grads = random_grads(params, rng, 4, rng.uniform(-1, 1, size=len(shapes)))
  for measure in ("G", "G_prime"):
    tx = ga.intelligent_amplification([(2, 0.1, 1, 2)], 4, measure=measure)
    _, state = run(tx, params, grads + grads[:1])
    values = np.asarray(state.measure)
    assert np.all((values >= 0) & (values <= 1 + 1e-6))
    # Multiplying one layer's gradients by a positive constant leaves every measure as is.
    scaled = [{**g, "layer0": jax.tree.map(lambda x: x * scale, g["layer0"])} for g in grads]
    _, state2 = run(tx, params, scaled + scaled[:1])
    np.testing.assert_allclose(state2.measure, values, rtol=1e-4, atol=1e-6)


def test_exactly_selected_layers_scaled_and_nothing_before_first_selection():
  params = make_params([[(4, 3)], [(5,)], [(2, 2), (2,)], [(3,)]])
  rng = np.random.default_rng(1)
  spe = 3
  grads = random_grads(params, rng, 5 * spe, bias=[2.0, 0.0, 0.1, -0.1])
  tx = ga.intelligent_amplification(PHASES, spe, measure="G", case=1, threshold=1.0)
  outs, state = run(tx, params, grads)
  scales = observed_scales(grads, outs, 4)
  np.testing.assert_allclose(scales[: 2 * spe], 1.0, rtol=1e-6)  # no-amp phase + analysis
  np.testing.assert_allclose(scales[2 * spe : 3 * spe], [[2, 1, 1, 1]] * spe, rtol=1e-6)
  # Epoch 4 is a one-epoch amplified phase: analysis only, the old selection is dropped.
  np.testing.assert_allclose(scales[3 * spe : 4 * spe], 1.0, rtol=1e-6)
  np.testing.assert_allclose(scales[4 * spe :], 1.0, rtol=1e-6)  # last phase: no amp
  report = ga.selection_report(state, params)
  assert [r["selected"] for r in report] == [True, False, False, False]
  assert {r["epoch"] for r in report} == {2} and {r["step"] for r in report} == {2 * spe}
  assert {r["factor"] for r in report} == {2.0}
  assert not bool(state.active)


@pytest.mark.parametrize(
  "make",
  [
    lambda: ga.intelligent_amplification(PHASES, 3, measure="G", threshold=1.0),
    lambda: ga.directionality_monitor(steps_per_epoch=3),
  ],
  ids=["amplification", "monitor"],
)
def test_updates_of_another_layer_count_than_init_are_refused(make):
  """A tree of 3 layers through a state made for 4 would scale and measure the wrong layers
  (JAX clamps an index out of range): refused, with both counts."""
  tx = make()
  state = tx.init(make_params([[(4, 3)], [(5,)], [(2, 2), (2,)], [(3,)]]))
  other = make_params([[(4, 3)], [(5,)], [(3,)]])
  with pytest.raises(
    ValueError, match="the updates have 3 layers but the params given to init had 4"
  ):
    tx.update(other, state)


def test_reselection_steps():
  params = make_params([[(3,)], [(3,)], [(3,)]])
  grads = random_grads(params, np.random.default_rng(0), 12, bias=[1.0, 0.0, 0.0])
  steps = []
  tx = ga.intelligent_amplification(
    [(1, 0.1, 0, 1), (12, 0.1, 1, 2)], 1, measure="G", threshold=0.5, reselect_every=3
  )
  state = tx.init(params)
  update = jax.jit(tx.update)
  for g in grads:
    _, state = update(g, state)
    steps.append(int(state.selection_step))
  # Phase covers epochs 2..12; analysis epochs 2, 5, 8, 11; selections at their ends.
  assert steps == [-1, -1, 2, 2, 2, 5, 5, 5, 8, 8, 8, 11]
  assert int(state.num_selections) == 4


def test_jit_and_no_jit_agree():
  params = make_params([[(3, 2)], [(4,)], [(2,)]])
  grads = random_grads(params, np.random.default_rng(3), 10, bias=[1.0, 0.2, -0.5])
  for tx in (
    ga.intelligent_amplification(
      PHASES, 2, measure="G_prime", case=2, threshold=0.5, control="matched_random"
    ),
    ga.random_amplification(PHASES, 2, ratio=0.5, reselect_every=1),
  ):
    jit_outs, jit_state = run(tx, params, grads, jit=True)
    outs, state = run(tx, params, grads, jit=False)
    chex.assert_trees_all_close((jit_outs, jit_state), (outs, state), rtol=1e-6)


def test_no_recompilation_across_phases_and_reselections():
  params = make_params([[(3, 2)], [(4,)], [(2,)]])
  grads = random_grads(params, np.random.default_rng(0), 16, bias=[1.0, 0.0, -1.0])
  phases = [(1, 0.1, 0, 1), (4, 0.1, 1, 2), (6, 0.01, 1, 3), (8, 0.01, 0, 1)]
  tx = optax.chain(
    ga.intelligent_amplification(phases, 2, measure="G", case=2, threshold=0.5, reselect_every=1),
    optax.sgd(ga.learning_rate_schedule(phases, 2), momentum=0.9),
  )
  step, traces = traced_step(tx)
  state = tx.init(params)
  for g in grads:
    params, state = step(params, state, g)
  assert int(ga.find_state(state).num_selections) == 3  # after epochs 2, 3 and 5
  assert len(traces) == 1


def test_state_buffers_can_be_donated():
  params = make_params([[(3, 2)], [(4,)]])
  grads = random_grads(params, np.random.default_rng(0), 3)
  for tx in (
    ga.intelligent_amplification(PHASES, 1, measure="G"),
    ga.intelligent_amplification(PHASES, 1, measure="G_prime"),
    ga.random_amplification(PHASES, 1, ratio=0.5),
  ):
    update = jax.jit(tx.update, donate_argnums=1)
    state = tx.init(params)
    for g in grads:
      _, state = update(g, state)
    assert int(state.count) == 3


def test_equation_3_amplification_equals_scaled_learning_rate():
  params = make_params([[(3, 2)], [(4,)]])
  grads = random_grads(params, np.random.default_rng(5), 4, bias=[3.0, 0.0])
  phases = [(2, 0.1, 1, 2.5)]
  tx = optax.chain(
    ga.intelligent_amplification(phases, 2, measure="G", threshold=0.5), optax.sgd(0.1)
  )
  state = tx.init(params)
  p = params
  for g in grads:
    before = p
    updates, state = tx.update(g, state, p)
    p = optax.apply_updates(p, updates)
  assert bool(ga.find_state(state).mask[0]) and not bool(ga.find_state(state).mask[1])
  # Last step: layer0 moved by -(2.5 * 0.1) g, layer1 by -0.1 g.
  np.testing.assert_allclose(
    p["layer0"]["w0"] - before["layer0"]["w0"], -0.25 * grads[-1]["layer0"]["w0"], rtol=1e-5
  )
  np.testing.assert_allclose(
    p["layer1"]["w0"] - before["layer1"]["w0"], -0.1 * grads[-1]["layer1"]["w0"], rtol=1e-5
  )


def test_orbax_restore_mid_phase_continues_identically(tmp_path):
  import orbax.checkpoint as ocp

  params = make_params([[(3, 2)], [(4,)], [(2,)]])
  grads = random_grads(params, np.random.default_rng(7), 10, bias=[1.0, 0.0, -1.0])
  tx = ga.intelligent_amplification(
    PHASES, 2, measure="G_prime", threshold=0.5, control="matched_random", reselect_every=1
  )
  update = jax.jit(tx.update)
  state = tx.init(params)
  for g in grads[:5]:  # stop inside the first amplified phase
    _, state = update(g, state)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "state", state)
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(tmp_path / "state", jax.tree.map(np.zeros_like, state))
  assert isinstance(restored, ga.AmplificationState)
  a, b = state, restored
  for g in grads[5:]:
    out_a, a = update(g, a)
    out_b, b = update(g, b)
    chex.assert_trees_all_equal((out_a, a), (out_b, b))


def test_state_memory():
  params = make_params([[(3, 2), (2,)], [(4,)]], dtype=jnp.bfloat16)
  g_state = ga.intelligent_amplification(PHASES, 2, measure="G").init(params)
  assert g_state.directionality.sums["signed_sum"].shape == (2,)
  assert g_state.directionality.sums["abs_sum"].shape == (2,)
  gp_state = ga.intelligent_amplification(PHASES, 2, measure="G_prime").init(params)
  for acc in (gp_state.directionality.sums["signed_sum"], gp_state.directionality.sums["abs_sum"]):
    assert jax.tree.map(lambda x: (x.shape, x.dtype), acc) == jax.tree.map(
      lambda x: (x.shape, jnp.dtype("float32")), params
    )
  # Beyond the two accumulators, only O(layers) scalars.
  total = sum(x.size for x in jax.tree.leaves(gp_state))
  assert 2 * (6 + 2 + 4) < total <= 2 * (6 + 2 + 4) + 7 * 2 + 15


def test_always_zero_gradient_layer_and_bfloat16():
  params = make_params([[(3,)], [(3,)], [(3,)]], dtype=jnp.bfloat16)
  rng = np.random.default_rng(0)
  grads = random_grads(params, rng, 6, bias=[1.0, 0.0, 0.0])
  grads = [{**g, "layer2": {"w0": jnp.zeros(3, jnp.bfloat16)}} for g in grads]
  for measure in ("G", "G_prime"):
    tx = ga.intelligent_amplification([(3, 0.1, 1, 2)], 2, measure=measure, case=2, threshold=0.1)
    outs, state = run(tx, params, grads)
    assert np.all(np.isfinite(state.normalized)) and float(state.measure[2]) == 0.0
    assert all(o["layer0"]["w0"].dtype == jnp.bfloat16 for o in outs)


def test_one_eligible_layer_selects_nothing():
  params = {
    "conv": {"kernel": jnp.zeros((2, 2)), "bias": jnp.zeros(2)},
    "bn": {"scale": jnp.zeros(2), "bias": jnp.zeros(2)},
  }
  grads = [jax.tree.map(lambda p: jnp.ones_like(p), params)] * 4
  tx = ga.intelligent_amplification(
    [(2, 0.1, 1, 2)], 2, measure="G", case=2, threshold=-1.0, eligible="kernels"
  )
  _, state = run(tx, params, grads)
  report = {r["layer"]: r for r in ga.selection_report(state, params)}
  assert report["conv"]["eligible"] and not report["bn"]["eligible"]
  # Ĝ is 0 for the single eligible layer; |0| > -1 selects it, never the ineligible one.
  assert report["conv"]["selected"] and not report["bn"]["selected"]
  assert report["conv"]["normalized"] == 0.0


def test_eligible_kernels_excludes_batchnorm_from_normalization():
  params = make_params([[(3,)], [(3,)], [(3,)]])
  params = {
    "a": {"kernel": params["layer0"]["w0"]},
    "b": {"kernel": params["layer1"]["w0"]},
    "c": {"scale": params["layer2"]["w0"]},
  }
  rng = np.random.default_rng(2)
  grads = [
    {
      "a": {"kernel": jnp.asarray(rng.normal(size=3) + 1, jnp.float32)},
      "b": {"kernel": jnp.asarray(rng.normal(size=3), jnp.float32)},
      "c": {"scale": jnp.asarray(rng.normal(size=3) + 5, jnp.float32)},
    }
    for _ in range(3)
  ]
  tx = ga.intelligent_amplification(
    [(2, 0.1, 1, 2)], 2, measure="G", threshold=-10.0, eligible="kernels"
  )
  _, state = run(tx, params, grads)
  values = np.asarray(state.measure)
  np.testing.assert_allclose(
    state.normalized, reference.zscore(values, [True, True, False]), rtol=1e-5, atol=1e-6
  )
  np.testing.assert_array_equal(state.mask, [1.0, 1.0, 0.0])


def test_transform_accepts_nnx_state():
  model = Tiny(nnx.Rngs(0))
  params = nnx.state(model, nnx.Param)
  tx = optax.chain(
    ga.intelligent_amplification([(2, 0.1, 1, 2)], 2, measure="G_prime", case=2, threshold=0.5),
    optax.sgd(0.1),
  )
  state = tx.init(params)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5, 5, 3)), jnp.float32)

  def loss(model):
    return jnp.mean(model(x) ** 2)

  for _ in range(3):
    grads = nnx.grad(loss)(model)
    updates, state = jax.jit(tx.update)(grads, state, params)
    params = optax.apply_updates(params, updates)
  report = ga.selection_report(state, params)
  assert [r["layer"] for r in report] == ["blocks/0", "blocks/1", "bn", "conv"]
  assert int(ga.find_state(state).selection_epoch) == 1


MASKED_OUT_LAYER1 = {
  "layer0": True,
  "layer1": False,
  "layer2": True,
  "layer3": {"w0": False, "w1": True},
}


@pytest.mark.parametrize(
  "mask",
  [
    {
      "layer0": {"w0": True},
      "layer1": {"w0": False},
      "layer2": {"w0": True},
      "layer3": {"w0": False, "w1": True},
    },
    MASKED_OUT_LAYER1,  # a prefix of the params
    lambda params: MASKED_OUT_LAYER1,
  ],
  ids=["tree", "prefix", "callable"],
)
def test_selection_report_inside_optax_masked(mask):
  params = make_params([[(3,)], [(4,)], [(3,)], [(2,), (2,)]])
  spe = 2
  # layer1 has the most direction, but it is masked out: layer0 is selected among the others.
  grads = random_grads(params, np.random.default_rng(0), 3 * spe, bias=[2.0, 3.0, 0.0, 0.1])
  amp = lambda: ga.intelligent_amplification(PHASES, spe, measure="G", case=1, threshold=1.0)
  outs, state = run(optax.chain(optax.masked(amp(), mask), optax.sgd(0.1)), params, grads)
  expected = [[1, 1, 1, 1]] * (2 * spe) + [[2, 1, 1, 1]] * spe  # epoch 3: layer0 amplified
  np.testing.assert_allclose(observed_scales(grads, outs, 4), -0.1 * np.array(expected), rtol=1e-5)

  report = ga.selection_report(state, params, mask=mask)
  assert [r["layer"] for r in report] == ["layer0", "layer1", "layer2", "layer3"]
  masked_in = [r for r in report if not r["masked_out"]]
  assert [r["layer"] for r in masked_in] == ["layer0", "layer2", "layer3"]
  assert [r["selected"] for r in masked_in] == [True, False, False]
  assert {(r["epoch"], r["step"], r["factor"]) for r in report} == {(2, 2 * spe, 2.0)}
  # The masked-in layers are reported as the transform alone reports them on those leaves.
  keep = lambda tree: dict(
    layer0=tree["layer0"], layer2=tree["layer2"], layer3={"w1": tree["layer3"]["w1"]}
  )
  _, alone = run(amp(), keep(params), [keep(g) for g in grads])
  assert masked_in == ga.selection_report(alone, keep(params))
  (out,) = [r for r in report if r["masked_out"]]
  assert out["layer"] == "layer1" and math.isnan(out["value"]) and math.isnan(out["normalized"])
  assert not (out["selected"] or out["selected_by_measure"] or out["eligible"])
  assert out["scale"] == 1.0  # optax.masked passes its updates through
  with pytest.raises(
    ValueError, match="params have 4 layers but the optimizer state has 3: .*mask=mask"
  ):
    ga.selection_report(state, params)


# ----------------------------------------------------------------------------- random


def test_random_amplification_count_seed_and_all_layers():
  params = make_params([[(2,)]] * 7)
  grads = [jax.tree.map(jnp.ones_like, params)] * 6
  phases = [(1, 0.1, 0, 1), (3, 0.1, 1, 2)]

  def selected(ratio, seed):
    _, state = run(ga.random_amplification(phases, 2, ratio=ratio, seed=seed), params, grads)
    return np.asarray(state.mask).astype(bool)

  assert selected(0.3, 0).sum() == 2  # round(2.1)
  assert selected(0.5, 0).sum() == 4  # round(3.5), halves up
  np.testing.assert_array_equal(selected(0.3, 0), selected(0.3, 0))
  draws = {tuple(selected(0.3, s)) for s in range(8)}
  assert len(draws) > 1
  assert selected(1.0, 3).all() and not selected(0.0, 3).any()


def test_random_timing_with_and_without_wait():
  params = make_params([[(2,)]] * 3)
  grads = [jax.tree.map(jnp.ones_like, params)] * 6
  phases = [(1, 0.1, 0, 1), (3, 0.1, 1, 2)]
  outs, _ = run(ga.random_amplification(phases, 2, ratio=1.0), params, grads)
  np.testing.assert_allclose(observed_scales(grads, outs, 3)[:, 0], [1, 1, 1, 1, 2, 2])
  outs, _ = run(
    ga.random_amplification(phases, 2, ratio=1.0, wait_first_epoch=False), params, grads
  )
  np.testing.assert_allclose(observed_scales(grads, outs, 3)[:, 0], [1, 1, 2, 2, 2, 2])


def test_matched_random_uses_measure_count():
  params = make_params([[(3,)]] * 8)
  rng = np.random.default_rng(4)
  grads = random_grads(params, rng, 4, bias=rng.uniform(-2, 2, 8))
  kwargs = dict(measure="G", case=2, threshold=0.8)
  phases = [(2, 0.1, 1, 2)]
  _, base = run(ga.intelligent_amplification(phases, 2, **kwargs), params, grads)
  counts, masks = set(), set()
  for seed in range(6):
    _, state = run(
      ga.intelligent_amplification(phases, 2, control="matched_random", seed=seed, **kwargs),
      params,
      grads,
    )
    np.testing.assert_allclose(state.normalized, base.normalized)
    counts.add(int(np.sum(state.mask)))
    masks.add(tuple(np.asarray(state.mask)))
  assert counts == {int(np.sum(base.mask))} and 0 < counts.pop() < 8
  assert len(masks) > 1


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(measure="H"), "measure must be one of"),
    (dict(case=4), "case must be one of 1 \\(upper tail"),
    (dict(threshold=float("nan")), "threshold must be a finite number"),
    (dict(threshold="high"), "threshold must be a finite number"),
    (dict(control="random"), "control must be one of"),
    (dict(reselect_every=0), "reselect_every"),
  ],
)
def test_intelligent_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    ga.intelligent_amplification(PHASES, 2, **kwargs)


@pytest.mark.parametrize("ratio", [-0.1, 1.5, math.nan, None])
def test_random_rejects_bad_ratio(ratio):
  with pytest.raises(ValueError, match="ratio must be a number in"):
    ga.random_amplification(PHASES, 2, ratio=ratio)


def test_eligible_leaving_no_layer_or_unknown():
  params = {"bn": {"scale": jnp.zeros(2)}}
  with pytest.raises(ValueError, match="leaves no layer"):
    ga.intelligent_amplification(PHASES, 2, eligible="kernels").init(params)
  with pytest.raises(ValueError, match="eligible"):
    ga.random_amplification(PHASES, 2, ratio=0.5, eligible="convs").init(params)


# ----------------------------------------------------------------------------- own loops


def test_steps_per_epoch_drops_the_ragged_batch():
  assert ga.steps_per_epoch(50_000, 128) == 390  # 50,000 = 390 * 128 + 80
  assert ga.steps_per_epoch(256, 128) == 2
  with pytest.raises(ValueError, match="exceeds the 5 training examples"):
    ga.steps_per_epoch(5, 128)
  with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
    ga.steps_per_epoch(100, 0)


@pytest.mark.parametrize(
  "make",
  [
    lambda spe: ga.intelligent_amplification(PHASES, spe, measure="G", case=1, threshold=0.5),
    lambda spe: ga.directionality_monitor(spe),
  ],
)
def test_check_epoch_start_catches_a_loop_with_a_ragged_batch(make):
  params = make_params([[(3,)], [(2, 2)]])
  tx = optax.chain(make(4), optax.sgd(0.1))
  grads = random_grads(params, np.random.default_rng(0), 1)[0]
  update = jax.jit(tx.update)
  for updates_per_epoch, fails in ((4, False), (5, True)):  # 4 full batches, or one more
    state = tx.init(params)
    ga.check_epoch_start(state, 1, 4)
    for _ in range(updates_per_epoch):
      _, state = update(grads, state, params)
    if fails:
      with pytest.raises(ValueError, match="epoch 2 starts after 5 updates.*expect 4"):
        ga.check_epoch_start(state, 2, 4)
    else:
      ga.check_epoch_start(state, 2, 4)
  with pytest.raises(ValueError, match="holds no amplification"):
    ga.check_epoch_start(optax.sgd(0.1).init(params), 1, 4)


def _conditionals(jaxpr):
  """Every ``cond`` equation of a jaxpr and of the jaxprs nested in it."""
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "cond":
      yield eqn
    for param in eqn.params.values():
      for sub in param if isinstance(param, (list, tuple)) else [param]:
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          yield from _conditionals(inner)


@pytest.mark.parametrize(
  "tx",
  [
    ga.intelligent_amplification(PHASES, 2, measure="G_prime", track_directionality=True),
    ga.intelligent_amplification(PHASES, 2, measure="G", control="matched_random"),
    ga.random_amplification(PHASES, 2, ratio=0.5, track_directionality=("G", "GSNR")),
    ga.directionality_monitor(2),
  ],
)
def test_no_parameter_sized_array_passes_through_a_conditional(tx):
  # A conditional's results are copied on a GPU; the accumulators must be updated by
  # element-wise selects, so only per-layer vectors and scalars may come out of one.
  params = make_params([[(3, 3, 4, 8)], [(8,), (8,)], [(16, 10)]])  # 3 layers
  state = tx.init(params)
  jaxpr = jax.make_jaxpr(tx.update)(params, state).jaxpr
  conds = list(_conditionals(jaxpr))
  assert len(conds) <= 1  # the measures, at an epoch's last update
  for eqn in conds:
    assert all(math.prod(v.aval.shape) <= 3 for v in eqn.outvars), eqn.outvars
