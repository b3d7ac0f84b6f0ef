"""Tests for gradamp_jax.models: shapes, parameter counts, layer grouping, BatchNorm modes."""

import collections
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import gradamp_jax as ga
from gradamp_jax import models

# Trainable parameters (conv/dense kernels and biases, BatchNorm scale and bias; running
# statistics excluded) with 10 classes. Obtained once, independently of this package, with a
# hand-written formula following the PyTorch definitions of kuangliu/pytorch-cifar: the sum
# over convolutions of k*k*c_in*c_out (+ c_out for the biased VGG convolutions), 2*c per
# BatchNorm and c_in*10 + 10 for the classifier, with 1x1 conv + BN projection shortcuts
# wherever a block changes the shape (also for resnet8..56). ResNet-18 = 11,173,962 and
# VGG-16 = 14,728,266 are the counts PyTorch reports for those definitions.
PARAM_COUNTS = {
  "vgg11": 9_231_114,
  "vgg13": 9_416_010,
  "vgg16": 14_728_266,
  "vgg19": 20_040_522,
  "resnet18": 11_173_962,
  "resnet34": 21_282_122,
  "resnet50": 23_520_842,
  "resnet101": 42_512_970,
  "resnet8": 78_042,
  "resnet20": 272_474,
  "resnet32": 466_906,
  "resnet44": 661_338,
  "resnet56": 855_770,
}

# (Conv, Dense, BatchNorm) layers, counted from the same definitions. ResNets: stem conv +
# 2 (Basic) or 3 (Bottleneck) convs per block + one projection per stage whose first block
# changes the shape (3 for resnet18/34 and the 3-stage CIFAR ResNets' 2, 4 for resnet50/101).
LAYER_COUNTS = {
  "vgg11": (8, 1, 8),
  "vgg13": (10, 1, 10),
  "vgg16": (13, 1, 13),
  "vgg19": (16, 1, 16),
  "resnet18": (20, 1, 20),
  "resnet34": (36, 1, 36),
  "resnet50": (53, 1, 53),
  "resnet101": (104, 1, 104),
  "resnet8": (9, 1, 9),
  "resnet20": (21, 1, 21),
  "resnet32": (33, 1, 33),
  "resnet44": (45, 1, 45),
  "resnet56": (57, 1, 57),
}

_MODULE_KIND = {nnx.Conv: "conv", nnx.Linear: "dense", nnx.BatchNorm: "bn"}


@functools.cache
def _abstract_split(name, num_classes=10):
  """``nnx.split`` of the model with ShapeDtypeStructs instead of arrays (nothing initialised)."""
  return nnx.split(nnx.eval_shape(lambda: models.create(name, num_classes)))


def _abstract_model(name, num_classes=10):
  return nnx.merge(*_abstract_split(name, num_classes))


def _layers(params: nnx.State) -> dict[tuple, set[str]]:
  """Layer path -> names of its parameters; a layer is a parameter path minus its last key."""
  layers = collections.defaultdict(set)
  for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
    assert path[-1] == jax.tree_util.GetAttrKey("value")
    keys = tuple(k.key for k in path[:-1])
    layers[keys[:-1]].add(keys[-1])
  return dict(layers)


def _images(batch, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(batch, 32, 32, 3)), jnp.float32)


def _numpy_initialised(name, seed=0):
  """The model with He-normal kernels drawn by numpy, BN scale 1, biases 0, stats (0, 1).

  On a CPU, ``jax.random`` initialisation compiles one kernel per parameter shape (about a
  second each), so only resnet8 is built with ``models.create``; the other models' tests
  need parameters of the right shapes, not that particular initialisation.
  """
  graphdef, state = _abstract_split(name)
  rng = np.random.default_rng(seed)

  def init(path, leaf):
    kind = path[-2].key  # the last key before GetAttrKey('value')
    if kind == "kernel":
      fan_in = np.prod(leaf.shape[:-1])
      return jnp.asarray(rng.normal(size=leaf.shape) * np.sqrt(2 / fan_in), leaf.dtype)
    return jnp.full(leaf.shape, 1.0 if kind in ("scale", "var") else 0.0, leaf.dtype)

  return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(init, state))


# Models are built once per module; tests that mutate a model take an nnx.clone.
@pytest.fixture(scope="module")
def resnet8():
  return models.create("resnet8", 10, seed=0)


@pytest.fixture(scope="module")
def vgg11():
  return _numpy_initialised("vgg11")


@pytest.fixture(scope="module")
def resnet18():
  return _numpy_initialised("resnet18")


def test_model_names():
  assert set(models.MODEL_NAMES) == set(PARAM_COUNTS)


def test_unknown_name_lists_known_names():
  with pytest.raises(ValueError, match=r"resnet7.*known models:.*resnet18"):
    models.create("resnet7", 10)


@pytest.mark.parametrize("num_classes", [0, -1, 2.0])
def test_bad_num_classes(num_classes):
  with pytest.raises(ValueError, match="num_classes"):
    models.create("resnet8", num_classes)


def test_non_float_dtype():
  with pytest.raises(ValueError, match="dtype"):
    models.create("resnet8", 10, dtype=jnp.int32)


def test_unknown_conv_lists_known():
  with pytest.raises(ValueError, match=r"'fft'; known: lax, im2col"):
    models.create("resnet8", 10, conv="fft")


def test_conv_choice_gives_lax_gradients():
  """``conv="im2col"`` computes the same loss gradient as lax's convolution, in every
  convolution of the model (the default is lax's, on every backend)."""
  x, labels = _images(4), jnp.arange(4) % 10
  grads = {}
  for conv in ("lax", "im2col"):
    model = models.create("resnet8", 10, seed=0, conv=conv)
    convs = [m for _, m in nnx.iter_graph(model) if isinstance(m, nnx.Conv)]
    assert len(convs) == 9 and {c.conv_general_dilated for c in convs} == {
      jax.lax.conv_general_dilated if conv == "lax" else models.conv.conv_general_dilated
    }
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params, graphdef=graphdef, rest=rest):
      logits = nnx.merge(graphdef, params, rest)(x, train=False)
      return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    grads[conv] = jax.grad(loss)(params)
  for a, b in zip(jax.tree.leaves(grads["lax"]), jax.tree.leaves(grads["im2col"])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_parameter_count(name):
  params = nnx.state(_abstract_model(name), nnx.Param)
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == PARAM_COUNTS[name]


# At a width multiplier (config.width), by hand from the same definitions:
# vgg19 x 0.25 (16, 16 | 32, 32 | 64 x 4 | 128 x 4 | 128 x 4 channels): per conv 9*c_in*c_out
# + c_out, per BatchNorm 2*c_out: 480 + 2,352 + 4,704 + 9,312 + 18,624 + 3 * 37,056
# + 74,112 + 7 * 147,840, and the classifier 128*10 + 10 = 1,290.
# resnet8 x 0.5 (8 | 16 | 32 channels): stem 216 + 16; layer1 2 * (576 + 16); layer2
# 1,152 + 32, 2,304 + 32 and the projection 128 + 32; layer3 4,608 + 64, 9,216 + 64 and
# 512 + 64; the classifier 32*10 + 10 = 330.
WIDTH_PARAM_COUNTS = {("vgg19", 0.25): 1_256_922, ("resnet8", 0.5): 19_954}


@pytest.mark.parametrize("name, width", sorted(WIDTH_PARAM_COUNTS))
def test_parameter_count_at_a_width(name, width):
  model = nnx.eval_shape(lambda: models.create(name, 10, width=width))
  params = nnx.state(model, nnx.Param)
  assert sum(leaf.size for leaf in jax.tree.leaves(params)) == WIDTH_PARAM_COUNTS[name, width]
  assert _layers(params).keys() == _layers(nnx.state(_abstract_model(name), nnx.Param)).keys()


def test_a_width_is_refused_when_not_positive_or_when_the_builder_has_none(registry):
  with pytest.raises(ValueError, match=r"width must be a positive number, got 0"):
    models.create("vgg11", 10, width=0)
  registry.register("tiny_cnn", TinyCNN)
  assert models.create("tiny_cnn", 10, width=1.0).conv.out_features == 4
  with pytest.raises(ValueError, match=r"model 'tiny_cnn' takes no width multiplier"):
    models.create("tiny_cnn", 10, width=0.5)


@pytest.mark.parametrize("name", sorted(LAYER_COUNTS))
def test_each_conv_dense_batchnorm_is_one_layer(name):
  model = _abstract_model(name)
  layers = _layers(nnx.state(model, nnx.Param))
  modules = {
    path: _MODULE_KIND[type(node)]
    for path, node in nnx.iter_graph(model)
    if type(node) in _MODULE_KIND
  }
  assert set(layers) == set(modules)
  kinds = collections.Counter(modules.values())
  assert (kinds["conv"], kinds["dense"], kinds["bn"]) == LAYER_COUNTS[name]
  for path, kind in modules.items():
    expected = {"conv": {"kernel"}, "dense": {"kernel", "bias"}, "bn": {"scale", "bias"}}[kind]
    if kind == "conv" and name.startswith("vgg"):
      expected = {"kernel", "bias"}
    assert layers[path] == expected, path


def test_parameter_paths_are_readable():
  resnet = _layers(nnx.state(_abstract_model("resnet18"), nnx.Param))
  assert {("conv1",), ("bn1",), ("fc",), ("layer1", 0, "conv1"), ("layer4", 1, "bn2")} <= set(
    resnet
  )
  assert ("layer2", 0, "shortcut_conv") in resnet and ("layer1", 0, "shortcut_conv") not in resnet
  vgg = _layers(nnx.state(_abstract_model("vgg11"), nnx.Param))
  assert {("features", 0, "conv"), ("features", 7, "bn"), ("fc",)} <= set(vgg)


@pytest.mark.parametrize("name", sorted(PARAM_COUNTS))
def test_output_shape_all_models(name):
  """Shape inference only (abstract evaluation), so even resnet101 is quick."""
  graphdef, state = _abstract_split(name)
  x = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=False), state, x)
  assert out.shape == (2, 10) and out.dtype == jnp.float32


@pytest.mark.parametrize("name", ["resnet8", "vgg11"])
def test_num_classes_sets_output_size(name):
  graphdef, state = _abstract_split(name, num_classes=7)
  x = jax.ShapeDtypeStruct((3, 32, 32, 3), jnp.float32)
  out = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x, train=True), state, x)
  assert out.shape == (3, 7)


@functools.partial(nnx.jit, static_argnums=2)
def _forward(model, x, train):
  """Compiled ``model(x, train=train)``; BatchNorm statistic updates land in ``model``."""
  return model(x, train=train)


@pytest.mark.parametrize("name", ["resnet8", "resnet18", "vgg11"])
def test_forward(name, request):
  model = nnx.clone(request.getfixturevalue(name))
  for train in (True, False):
    logits = _forward(model, _images(2), train)
    assert logits.shape == (2, 10) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


def _conv_bn_block(vgg11):
  """The first VGG block (conv -> BN -> ReLU) with non-trivial BN parameters and stats."""
  block = nnx.clone(vgg11.features[0])
  rng = np.random.default_rng(0)
  block.bn.scale.value = jnp.asarray(rng.uniform(0.5, 2.0, 64), jnp.float32)
  block.bn.bias.value = jnp.asarray(rng.normal(size=64), jnp.float32)
  block.bn.mean.value = jnp.asarray(rng.normal(size=64), jnp.float32)
  block.bn.var.value = jnp.asarray(rng.uniform(0.5, 2.0, 64), jnp.float32)
  return block


def test_batchnorm_train_mode_uses_batch_stats_and_updates_running_stats(vgg11):
  block = _conv_bn_block(vgg11)
  x = _images(4)
  h = np.asarray(block.conv(x), np.float64)
  scale, bias = np.asarray(block.bn.scale.value), np.asarray(block.bn.bias.value)
  old_mean, old_var = np.asarray(block.bn.mean.value), np.asarray(block.bn.var.value)
  batch_mean, batch_var = h.mean(axis=(0, 1, 2)), h.var(axis=(0, 1, 2))

  out = block(x, train=True)

  expected = np.maximum((h - batch_mean) / np.sqrt(batch_var + 1e-5) * scale + bias, 0)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(
    block.bn.mean.value, 0.9 * old_mean + 0.1 * batch_mean, rtol=1e-5, atol=1e-5
  )
  np.testing.assert_allclose(
    block.bn.var.value, 0.9 * old_var + 0.1 * batch_var, rtol=1e-4, atol=1e-5
  )


def test_batchnorm_eval_mode_uses_running_stats_and_leaves_them(vgg11):
  block = _conv_bn_block(vgg11)
  x = _images(4)
  h = np.asarray(block.conv(x), np.float64)
  scale, bias = np.asarray(block.bn.scale.value), np.asarray(block.bn.bias.value)
  mean, var = np.asarray(block.bn.mean.value), np.asarray(block.bn.var.value)

  out = block(x, train=False)

  expected = np.maximum((h - mean) / np.sqrt(var + 1e-5) * scale + bias, 0)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(block.bn.mean.value, mean)
  np.testing.assert_array_equal(block.bn.var.value, var)


def test_whole_model_modes(resnet8):
  """Train mode: every running stat moves, outputs depend on the rest of the batch.
  Eval mode: no running stat moves, each output depends only on its own example."""
  resnet8 = nnx.clone(resnet8)
  x = _images(4, seed=1)
  x_other = x.at[1:].set(_images(3, seed=2))

  def stats():
    return jax.tree.map(np.asarray, nnx.state(resnet8, nnx.BatchStat))

  before = stats()

  eval_logits = _forward(resnet8, x, False)
  jax.tree.map(np.testing.assert_array_equal, stats(), before)
  np.testing.assert_allclose(
    _forward(resnet8, x_other, False)[0], eval_logits[0], rtol=1e-5, atol=1e-5
  )

  train_logits = _forward(resnet8, x, True)
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), stats(), before)
  assert all(jax.tree.leaves(changed))
  assert not np.allclose(_forward(resnet8, x_other, True)[0], train_logits[0], atol=1e-3)


def test_bfloat16_compute_float32_params(resnet8):
  model = models.create("resnet8", 10, dtype=jnp.bfloat16)
  reference = nnx.clone(resnet8)  # same seed, float32
  x = _images(8)
  logits = _forward(model, x, True)
  assert logits.dtype == jnp.bfloat16
  dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.Param))}
  # After a training-mode call, i.e. after BatchNorm has written its statistics.
  stat_dtypes = {leaf.dtype for leaf in jax.tree.leaves(nnx.state(model, nnx.BatchStat))}
  assert dtypes == {jnp.dtype(jnp.float32)} and stat_dtypes == {jnp.dtype(jnp.float32)}
  # Same seed, same parameters: bfloat16 logits are a rounded version of the float32 ones.
  expected = _forward(reference, x, True)
  np.testing.assert_allclose(
    np.asarray(logits, np.float32), expected, atol=0.1 * np.abs(expected).max()
  )


def test_functional_training_step_under_jit(resnet8):
  graphdef, params, batch_stats = nnx.split(resnet8, nnx.Param, nnx.BatchStat)
  tx = optax.sgd(0.1, momentum=0.9)
  opt_state = tx.init(params)
  x, labels = _images(8), jnp.arange(8) % 10

  @jax.jit
  def step(params, batch_stats, opt_state):
    def loss_fn(params):
      # copy=True: fresh Variables at this trace level, so BatchNorm may update them
      # inside jax.value_and_grad.
      model = nnx.merge(graphdef, params, batch_stats, copy=True)
      logits = model(x, train=True)
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, nnx.state(model, nnx.BatchStat)

    (loss, new_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), new_stats, opt_state, loss

  losses = []
  for _ in range(5):
    new_params, new_stats, opt_state, loss = step(params, batch_stats, opt_state)
    assert jax.tree.structure(new_stats) == jax.tree.structure(batch_stats)
    assert not np.array_equal(new_stats["bn1"]["mean"].value, batch_stats["bn1"]["mean"].value)
    params, batch_stats = new_params, new_stats
    losses.append(float(loss))
  assert losses[-1] < losses[0]


class TinyCNN(nnx.Module):
  """A model of a user's own: conv -> BN -> ReLU -> mean -> dense."""

  def __init__(self, num_classes, *, dtype, rngs):
    self.conv = nnx.Conv(3, 4, (3, 3), dtype=dtype, rngs=rngs)
    self.bn = nnx.BatchNorm(4, dtype=dtype, rngs=rngs)
    self.head = nnx.Linear(4, num_classes, dtype=dtype, rngs=rngs)

  def __call__(self, x, train):
    x = nnx.relu(self.bn(self.conv(x), use_running_average=not train))
    return self.head(x.mean(axis=(1, 2)))


@pytest.fixture
def registry(monkeypatch):
  """The model registry, restored after the test."""
  monkeypatch.setattr(models, "_BUILDERS", dict(models._BUILDERS))
  return models


@pytest.mark.parametrize("name", models.names())
def test_every_registered_model_keeps_the_contract(name):
  assert models.contract_problem(_abstract_model(name, 7), 7) is None


def test_a_registered_model_trains_a_step_from_the_config(registry):
  from configs import default
  from gradamp_jax.training import config_fields, optimizer
  from gradamp_jax.training import steps as steps_lib

  registry.register("tiny_cnn", TinyCNN)
  assert registry.names()[-1] == "tiny_cnn" and "tiny_cnn" not in registry.MODEL_NAMES
  config = default.get_config()
  config.model, config.batch_size, config.conv = "tiny_cnn", 4, "im2col"
  config.amplification.update(method="all", eligible="kernels")
  config_fields.validate_config(config)
  tx = optimizer.create_optimizer(config, 2)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  model = nnx.merge(graphdef, state.params, state.batch_stats)
  assert model.conv.conv_general_dilated is models.CONV_IMPLEMENTATIONS["im2col"]
  rng = np.random.default_rng(0)
  batch = dict(
    image=jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32),
    label=jnp.asarray([0, 1, 2, 3], jnp.int32),
  )
  after, metrics = jax.jit(steps_lib.make_train_step(graphdef, tx))(state, batch)
  assert int(after.step) == 1 and np.isfinite(float(metrics["loss"]))
  # BatchNorm's running statistics moved (train mode), and only the kernels are eligible.
  assert not np.array_equal(after.batch_stats["bn"]["mean"], state.batch_stats["bn"]["mean"])
  assert ga.layer_index(state.params).names == ("bn", "conv", "head")
  assert list(ga.find_state(after.opt_state).eligible) == [False, True, True]


def test_an_unregistered_model_name_is_refused_naming_the_registered(registry):
  from configs import default
  from gradamp_jax.training import config_fields

  registry.register("tiny_cnn", TinyCNN)
  config = default.get_config()
  config.model = "tiny"
  with pytest.raises(
    ValueError, match=r"config.model: must be one of vgg11, .*, tiny_cnn, got 'tiny'"
  ):
    config_fields.validate_config(config)


def test_a_config_width_must_be_positive():
  from configs import default
  from gradamp_jax.training import config_fields

  config = default.get_config()
  config.width = -0.5
  with pytest.raises(ValueError, match=r"config.width: must be a finite number > 0, got -0.5"):
    config_fields.validate_config(config)


class _NoKernel(nnx.Module):
  def __init__(self, num_classes, *, dtype, rngs):
    self.w = nnx.Param(jnp.zeros((3, num_classes)))

  def __call__(self, x, train):
    return x.mean(axis=(1, 2)) @ self.w


class _NotLogits(TinyCNN):
  def __call__(self, x, train):
    return super().__call__(x, train).repeat(2, axis=0)  # a batch twice the images


class _OtherState(TinyCNN):
  def __init__(self, num_classes, *, dtype, rngs):
    super().__init__(num_classes, dtype=dtype, rngs=rngs)
    self.calls = nnx.Variable(jnp.zeros(()))


@pytest.mark.parametrize(
  "name, builder, words",
  [
    ("tiny cnn", TinyCNN, "model name 'tiny cnn': letters, digits, '_', '-' or '.' only"),
    ("resnet8", TinyCNN, "model 'resnet8' is registered already (replace=True to replace it)"),
    ("x", 3, "model 'x': the builder must be callable, got 3"),
    ("x", _NoKernel, "no parameter is named 'kernel'"),
    ("x", _NotLogits, "model(x, train=True) gives float32[4, 10], not (2, 10) logits"),
    ("x", _OtherState, "its state holds Variable besides nnx.Param and nnx.BatchStat"),
  ],
)
def test_register_refuses_what_breaks_the_contract_saying_what(registry, name, builder, words):
  with pytest.raises(ValueError) as raised:
    registry.register(name, builder)
  assert words in str(raised.value)
  assert name not in registry.names() or name == "resnet8"
