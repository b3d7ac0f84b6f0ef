"""The directionality monitor, non-finite gradients, reports and input checks."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from test_amplification import make_params, observed_scales, random_grads, run, traced_step

import gradamp_jax as ga


def leaves_of(grads):
  return [jax.tree.leaves(g) for g in grads]


def test_non_finite_gradient_is_nan_for_its_layer_and_epoch_only():
  params = make_params([[(3, 2)], [(4,)], [(2,)]])
  rng = np.random.default_rng(0)
  grads = random_grads(params, rng, 6, bias=[1.0, 0.0, -0.5])
  bad = {**grads[1], "layer1": {"w0": grads[1]["layer1"]["w0"].at[2].set(jnp.inf)}}
  grads[1] = bad
  tx = ga.directionality_monitor(3)
  state = tx.init(params)
  update = jax.jit(tx.update)
  reports = []
  for g in grads:
    _, state = update(g, state)
    reports.append(ga.directionality_report(state, params))
  first, second = reports[2], reports[5]
  assert np.isnan(first[1]["G"]) and np.isnan(first[1]["G_prime"])
  index = ga.layer_index(params)
  expected = reference.epoch_measures(leaves_of(grads), 3, index.leaf_layer, 3)
  for layer in (0, 2):
    np.testing.assert_allclose(first[layer]["G"], expected[0][0][layer], rtol=1e-5)
  # The next epoch starts from clean accumulators.
  np.testing.assert_allclose([r["G"] for r in second], expected[1][0], rtol=1e-5)
  np.testing.assert_allclose([r["G_prime"] for r in second], expected[1][1], rtol=1e-5)


@pytest.mark.parametrize("measure", ["G", "G_prime"])
def test_non_finite_layer_is_not_selected_and_others_are(measure):
  params = make_params([[(3,)], [(3,)], [(3,)], [(3,)], [(3,)]])
  rng = np.random.default_rng(1)
  spe = 2
  grads = random_grads(params, rng, 4 * spe, bias=[2.0, 1.5, 0.0, 0.1, 0.0])
  grads[spe] = {**grads[spe], "layer0": {"w0": jnp.full(3, jnp.nan)}}  # window epoch 2
  phases = [(1, 0.1, 0, 1), (4, 0.1, 1, 2)]
  tx = ga.intelligent_amplification(
    phases, spe, measure=measure, case=1, threshold=0.5, reselect_every=1
  )
  outs, state = run(tx, params, grads)
  scales = observed_scales(grads, outs, 5)
  # Window 2 without the bad layer: the z-score over the four finite layers decides.
  index = ga.layer_index(params)
  fn = reference.measure_g if measure == "G" else reference.measure_g_prime
  window = leaves_of(grads[spe : 2 * spe])
  values = [
    fn([[g for g, owner in zip(step, index.leaf_layer) if owner == layer] for step in window])
    for layer in range(1, 5)
  ]
  chosen = reference.decide(reference.zscore(values, [True] * 4), [True] * 4, 1, 0.5)
  np.testing.assert_allclose(scales[2 * spe], [1.0] + list(np.where(chosen, 2.0, 1.0)))
  assert chosen.any()
  # Window 3 is finite again: all five layers take part in the selection for epoch 4.
  window = leaves_of(grads[2 * spe : 3 * spe])
  values = [
    fn([[g for g, owner in zip(step, index.leaf_layer) if owner == layer] for step in window])
    for layer in range(5)
  ]
  chosen = reference.decide(reference.zscore(values, [True] * 5), [True] * 5, 1, 0.5)
  np.testing.assert_allclose(scales[3 * spe], np.where(chosen, 2.0, 1.0))
  assert np.isfinite(np.asarray(state.normalized)).all()


def test_tracking_amplification_reports_every_epoch_like_the_monitor():
  params = make_params([[(3, 2)], [(4,)], [(2,)], [(5,)]])
  grads = random_grads(params, np.random.default_rng(2), 12, bias=[1.0, 0.2, -0.5, 0.0])
  phases = [(2, 0.1, 0, 1), (5, 0.1, 1, 2), (6, 0.1, 0, 1)]
  monitor = ga.directionality_monitor(2)
  plain = ga.intelligent_amplification(phases, 2, measure="G", case=2, threshold=0.3)
  tracking = ga.intelligent_amplification(
    phases, 2, measure="G", case=2, threshold=0.3, track_directionality=True
  )
  states = [tx.init(params) for tx in (monitor, plain, tracking)]
  updates = [jax.jit(tx.update) for tx in (monitor, plain, tracking)]
  epochs_seen = []
  for g in grads:
    outs = []
    for i, update in enumerate(updates):
      out, states[i] = update(g, states[i])
      outs.append(out)
    for a, b in zip(jax.tree.leaves(outs[1]), jax.tree.leaves(outs[2])):
      np.testing.assert_array_equal(a, b)  # tracking does not change the selections
    want = ga.directionality_report(states[0], params)
    got = ga.directionality_report(states[2], params)
    if want:
      epochs_seen.append(want[0]["epoch"])
      for w, r in zip(want, got):
        assert w["epoch"] == r["epoch"] and w["layer"] == r["layer"]
        np.testing.assert_allclose([r["G"], r["G_prime"]], [w["G"], w["G_prime"]], rtol=1e-6)
  assert sorted(set(epochs_seen)) == [1, 2, 3, 4, 5, 6]
  assert int(states[1].num_selections) == 1


def test_accumulators_change_only_inside_analysis_windows():
  params = make_params([[(3, 2)], [(4,)]])
  grads = random_grads(params, np.random.default_rng(3), 8, bias=[1.0, 0.0])
  phases = [(2, 0.1, 0, 1), (4, 0.1, 1, 2)]  # the only window is epoch 3
  tx = ga.intelligent_amplification(phases, 2, measure="G_prime")
  state = tx.init(params)
  update = jax.jit(tx.update)
  sums = []
  for g in grads:
    _, state = update(g, state)
    sums.append(
      sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(state.directionality.sums["abs_sum"]))
    )
  # Steps 1-4 (epochs 1-2) add nothing; steps 5-6 (window 3) do; steps 7-8 leave the
  # finished window's sums as they are (the next window's first update resets them).
  assert sums[:4] == [0.0] * 4 and 0 < sums[4] < sums[5] and sums[6:] == [sums[5]] * 2
  step_sums = [sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(g)) for g in grads[4:6]]
  np.testing.assert_allclose(sums[5], sum(step_sums), rtol=1e-6)
  assert int(state.directionality.epoch) == 3


def test_monitor_in_a_chain_traces_once_and_restores_mid_epoch(tmp_path):
  import orbax.checkpoint as ocp

  params = make_params([[(3, 2)], [(4,)], [(2,)]])
  grads = random_grads(params, np.random.default_rng(4), 9, bias=[1.0, 0.0, -1.0])
  tx = optax.chain(ga.directionality_monitor(2), optax.sgd(0.1, momentum=0.9))
  step, traces = traced_step(tx)
  p, state = params, tx.init(params)
  for g in grads[:5]:
    p, state = step(p, state, g)
  with ocp.StandardCheckpointer() as ckpt:
    ckpt.save(tmp_path / "state", state)
  with ocp.StandardCheckpointer() as ckpt:
    restored = ckpt.restore(tmp_path / "state", jax.tree.map(np.zeros_like, state))
  a, b = (p, state), (p, restored)
  for g in grads[5:]:
    a = step(*a, g)
    b = step(*b, g)
  chex.assert_trees_all_equal(a, b)
  assert len(traces) == 1
  assert ga.directionality_report(a[1], params)[0]["epoch"] == 4


def test_reports_refuse_parameters_of_other_layers():
  params = make_params([[(3,)], [(3,)]])
  other = {"conv": {"w0": jnp.zeros(3)}, "dense": {"w0": jnp.zeros(3)}}
  grads = random_grads(params, np.random.default_rng(5), 4, bias=[1.0, 0.0])
  _, state = run(
    ga.intelligent_amplification(
      [(2, 0.1, 1, 2)], 2, measure="G", threshold=-5.0, track_directionality=True
    ),
    params,
    grads + grads[:1],
  )
  assert ga.selection_report(state, params) and ga.directionality_report(state, params)
  with pytest.raises(ValueError, match="not the ones the optimizer state was built for"):
    ga.selection_report(state, other)
  with pytest.raises(ValueError, match="not the ones the optimizer state was built for"):
    ga.directionality_report(state, other)
  with pytest.raises(ValueError, match="no DirectionalityState"):
    ga.directionality_report(optax.sgd(0.1).init(params), params)


def test_matched_random_keeps_the_measures_choice():
  params = make_params([[(3,)]] * 8)
  rng = np.random.default_rng(6)
  grads = random_grads(params, rng, 5, bias=rng.uniform(-2, 2, 8))
  kwargs = dict(measure="G_prime", case=2, threshold=0.8)
  _, base = run(ga.intelligent_amplification([(2, 0.1, 1, 2)], 2, **kwargs), params, grads)
  _, control = run(
    ga.intelligent_amplification([(2, 0.1, 1, 2)], 2, seed=3, control="matched_random", **kwargs),
    params,
    grads,
  )
  rows = ga.selection_report(control, params)
  np.testing.assert_array_equal([r["selected_by_measure"] for r in rows], np.asarray(base.mask) > 0)
  assert sum(r["selected"] for r in rows) == sum(r["selected_by_measure"] for r in rows)
  assert [r["selected"] for r in rows] != [r["selected_by_measure"] for r in rows]
  assert all(r["selected"] == r["selected_by_measure"] for r in ga.selection_report(base, params))


def test_bfloat16_gradients_get_the_factor_unrounded():
  params = make_params([[(64,)], [(64,)]], dtype=jnp.bfloat16)
  g = {
    "layer0": {"w0": jnp.linspace(-3, 3, 64).astype(jnp.bfloat16)},
    "layer1": {"w0": jnp.ones(64, jnp.bfloat16)},
  }
  tx = ga.random_amplification([(2, 0.1, 1, 1.1)], 1, ratio=1.0)
  outs, _ = run(tx, params, [g, g])
  want = (np.asarray(g["layer0"]["w0"], np.float32) * np.float32(1.1)).astype(jnp.bfloat16)
  np.testing.assert_array_equal(outs[1]["layer0"]["w0"], want)
  # Multiplying by the factor rounded to bfloat16 (1.1015625) gives other values.
  rounded = np.asarray(g["layer0"]["w0"]) * jnp.bfloat16(1.1)
  assert np.any(np.asarray(rounded) != want)


@pytest.mark.parametrize(
  "phases, message",
  [
    ([(1, 0.1, "0", 1)], r"phases\[0\].*is_amp"),
    ([(1, 0.1, float("nan"), 1)], r"phases\[0\].*is_amp"),
    ([(1, 0.1, None, 1)], r"phases\[0\].*is_amp"),
    ([("3", 0.1, 0, 1)], r"phases\[0\].*end_epoch"),
    ([(1, 0.1, 0, 1), (float("inf"), 0.1, 1, 2)], r"phases\[1\].*end_epoch"),
    ([(1, "0.1", 0, 1)], r"phases\[0\].*learning_rate"),
  ],
)
def test_parse_phases_rejects_non_numbers(phases, message):
  with pytest.raises(ValueError, match=message):
    ga.parse_phases(phases)


@pytest.mark.parametrize("value", ["2", 2.5, float("inf"), True])
def test_reselect_every_must_be_a_positive_integer(value):
  with pytest.raises(ValueError, match="reselect_every"):
    ga.intelligent_amplification([(3, 0.1, 1, 2)], 2, reselect_every=value)
