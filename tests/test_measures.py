"""Measures as definitions: GSNR against NumPy, one state layout per tracked set, a measure
added by one definition, and G of the output layer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from flax import nnx
from test_amplification import make_params, observed_scales, random_grads, run

import gradamp_jax as ga
from gradamp_jax import measures


def leaves_of(grads):
  return [jax.tree.leaves(g) for g in grads]


def test_gsnr_matches_numpy_with_constant_and_still_weights():
  params = make_params([[(3, 2)], [(4,)], [(2,)]])
  grads = random_grads(params, np.random.default_rng(0), 4, bias=[1.0, 0.0, -0.5])
  for g in grads:  # weight 0 of layer1 never moves, weight 1 has a constant gradient
    g["layer1"]["w0"] = g["layer1"]["w0"].at[0].set(0.0).at[1].set(0.75)
  tx = ga.directionality_monitor(4, measures=("GSNR",))
  _, state = run(tx, params, grads)
  report = ga.directionality_report(state, params)
  index = ga.layer_index(params)
  window = leaves_of(grads)
  expected = [
    reference.measure_gsnr(
      [[g for g, owner in zip(step, index.leaf_layer) if owner == k] for step in window]
    )
    for k in range(3)
  ]
  np.testing.assert_allclose([r["GSNR"] for r in report], expected, rtol=1e-4)
  assert all(np.isfinite(r["GSNR"]) for r in report)
  # The constant weight counts 1/eps = 2**23 (the still one 0): layer1's mean holds it.
  assert report[1]["GSNR"] > 2**23 / 4 * 0.99


def test_gsnr_of_one_weight_by_hand():
  # Steps 1, 3: mean 2, variance 1 -> 4. Zero variance at 0: 0. Constant 2: 1/eps.
  signed = [jnp.asarray([4.0, 0.0, 4.0])]
  square = [jnp.asarray([10.0, 0.0, 8.0])]
  ratios = [
    measures.gradient_snr(
      [s[i : i + 1] for s in signed], [q[i : i + 1] for q in square], 2, [0], 1
    )[0]
    for i in range(3)
  ]
  np.testing.assert_allclose(ratios, [4.0, 0.0, 1 / np.finfo(np.float32).eps], rtol=1e-6)


@pytest.mark.parametrize("case", [1, 2])
def test_gsnr_selects_like_numpy(case):
  params = make_params([[(3,)], [(2, 2)], [(3,)], [(4,)], [(2,)]])
  grads = random_grads(params, np.random.default_rng(case), 12, bias=[2.0, 0.3, 0.0, -1.0, 0.1])
  phases = [(1, 0.1, 0, 1), (4, 0.1, 1, 2)]
  tx = ga.intelligent_amplification(phases, 3, measure="GSNR", case=case, threshold=0.5)
  outs, _ = run(tx, params, grads)
  index = ga.layer_index(params)
  expected = reference.expected_scales(
    phases, 3, leaves_of(grads), index.leaf_layer, 5, measure="GSNR", case=case, threshold=0.5
  )
  np.testing.assert_allclose(observed_scales(grads, outs, 5), expected)
  assert any((s != 1.0).any() for s in expected)


def state_bytes(tx, params) -> int:
  shapes = jax.eval_shape(tx.init, params)
  return sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(shapes))


def test_a_tracked_set_keeps_only_the_sums_it_needs():
  params = make_params([[(10, 10)], [(100,)]])  # 200 weights, 2 layers
  monitor = lambda names: ga.directionality_monitor(5, measures=names)
  g_alone = monitor(("G",)).init(params)
  assert set(g_alone.sums) == {"signed_sum", "abs_sum"}
  assert all(v.shape == (2,) for v in g_alone.sums.values())  # per-layer totals
  default = monitor(ga.measures.DEFAULT_TRACKED).init(params)
  assert set(default.sums) == {"signed_sum", "abs_sum"} and default.measures == ("G", "G_prime")
  everything = monitor(("GSNR", "G", "G_prime")).init(params)
  assert set(everything.sums) == {"signed_sum", "abs_sum", "square_sum"}
  assert everything.measures == ("G", "G_prime", "GSNR")  # definition order: one layout
  per_sum = 200 * 4
  extra = 4 + 4 + 4  # count, epoch, layers_id
  assert state_bytes(monitor(("G_prime",)), params) == 2 * per_sum + 2 * 4 + extra
  assert state_bytes(monitor(("G", "G_prime", "GSNR")), params) == 3 * per_sum + 3 * 2 * 4 + extra
  with pytest.raises(ValueError, match="measure must be one of"):
    monitor(("G", "nope"))


MEAN_ABS = measures.Measure(  # mean |g| per weight and step: a definition, nothing else
  "mean_abs",
  "mean |g|",
  ("abs_sum",),
  True,
  lambda w: w.layer_means("abs_sum") / w.steps,
  "a test",
)


@pytest.fixture
def own_measures(monkeypatch):
  """MEASURES as it is, restored after the test whatever it registers."""
  monkeypatch.setattr(measures, "MEASURES", dict(measures.MEASURES))
  return measures.MEASURES


def test_a_registered_measure_is_one_definition(own_measures):
  assert measures.register(MEAN_ABS) is MEAN_ABS and own_measures["mean_abs"] is MEAN_ABS
  params = make_params([[(3, 2)], [(4,)]])
  grads = random_grads(params, np.random.default_rng(4), 3, bias=[1.0, 0.0])
  phases = [(1, 0.1, 0, 1), (2, 0.1, 1, 2)]
  tx = ga.intelligent_amplification(
    phases, 3, measure="mean_abs", case=1, threshold=0.5, track_directionality=("G", "mean_abs")
  )
  _, state = run(tx, params, grads)
  (first, second) = ga.directionality_report(state, params)
  expected = [
    np.mean(np.abs([g["layer0"]["w0"] for g in grads])),
    np.mean(np.abs([g["layer1"]["w0"] for g in grads])),
  ]
  np.testing.assert_allclose([first["mean_abs"], second["mean_abs"]], expected, rtol=1e-5)
  assert set(first) == {"layer", "index", "epoch", "G", "mean_abs"}


class _Classifier(nnx.Module):
  def __init__(self, rngs):
    self.hidden = nnx.Linear(6, 8, rngs=rngs)
    self.fc = nnx.Linear(8, 5, rngs=rngs)

  def __call__(self, x):
    return self.fc(jax.nn.relu(self.hidden(x)))


def test_g_of_a_softmax_output_layer_is_zero():
  # Σ_c ∂L/∂z_c = Σ_c (p_c − y_c) = 0, so the output layer's kernel and bias gradients sum
  # to 0 over classes at every step: its G is 0 up to rounding, whatever the data.
  model = _Classifier(nnx.Rngs(0))
  graphdef, params = nnx.split(model, nnx.Param)
  params = params.to_pure_dict()
  rng = np.random.default_rng(5)

  def loss(params, x, y):
    logits = nnx.merge(graphdef, params)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

  tx = ga.directionality_monitor(4)
  state = tx.init(params)
  for _ in range(4):
    x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 5, 16))
    grads = jax.grad(loss)(params, x, y)
    np.testing.assert_allclose(jnp.sum(grads["fc"]["kernel"], axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(jnp.sum(grads["fc"]["bias"]), 0.0, atol=1e-6)
    _, state = tx.update(grads, state)
  rows = {r["layer"]: r for r in ga.directionality_report(state, params)}
  assert rows["fc"]["G"] < 1e-5 < rows["hidden"]["G"]
  assert rows["fc"]["G_prime"] > 0.1  # per weight, the output layer's gradients do move


def test_register_names_the_bad_field_and_refuses_names_taken(own_measures):
  for field, bad, allowed in (
    ("name", "mean abs", "a Python identifier"),
    ("sums", ("abs_sum", "cube_sum"), "a non-empty tuple of"),
    ("per_weight", 1, "True or False"),
    ("value", None, "a function of a Window"),
    ("bounds", (1.0, 0.0), r"None or \(low, high\) with low < high"),
  ):
    with pytest.raises(ValueError, match=rf"^Measure\.{field}: must be {allowed}"):
      measures.register(MEAN_ABS._replace(**{field: bad}))
  with pytest.raises(ValueError, match="'G' is already built-in"):
    measures.register(MEAN_ABS._replace(name="G"), replace=True)
  measures.register(MEAN_ABS)
  with pytest.raises(ValueError, match="'mean_abs' is already registered; pass replace=True"):
    measures.register(MEAN_ABS._replace(label="other"))
  assert measures.register(MEAN_ABS._replace(label="other"), replace=True).label == "other"
  assert "mean_abs" not in set(measures._BUILT_IN)


def test_a_registered_measure_is_accepted_by_the_config_and_labelled(own_measures):
  from configs import default
  from gradamp_jax.training import config_fields

  config = default.get_config()
  config.amplification.measure = "mean_abs"
  config.tracked_measures = ("G", "mean_abs")
  with pytest.raises(ValueError, match="config.amplification.measure: must be one of G, G_prime"):
    config_fields.check_fields(config)
  measures.register(MEAN_ABS._replace(bounds=(0.0, 10.0)))
  config_fields.check_fields(config)  # the registry as it is when checked
  assert measures.axis_label("mean_abs") == "mean |g|" and measures.bounds("mean_abs") == (0, 10)
  assert measures.axis_label("G_prime") == "G′ (eq. 7)" and measures.bounds("GSNR") is None
  assert measures.axis_label("unknown") == "unknown" and measures.bounds("unknown") is None
