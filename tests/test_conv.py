"""The CPU convolution gives lax's values and gradients; conv=auto picks and keeps one."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from gradamp_jax.models import conv


@pytest.mark.parametrize(
  "window, stride, cin, cout, size",
  [(3, 1, 4, 5, 8), (3, 2, 3, 6, 9), (1, 2, 4, 8, 8), (1, 1, 2, 3, 5)],
)
def test_values_and_gradients_match_lax(window, stride, cin, cout, size):
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, size, size, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(window, window, cin, cout)), jnp.float32)
  padding = ((window // 2, window // 2),) * 2
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))

  def loss(fn):
    return lambda x, k: jnp.sum(
      jnp.sin(fn(x, k, (stride, stride), padding, dimension_numbers=numbers))
    )

  want = jax.jit(jax.value_and_grad(loss(lax.conv_general_dilated), argnums=(0, 1)))(x, kernel)
  got = jax.jit(jax.value_and_grad(loss(conv.conv_general_dilated), argnums=(0, 1)))(x, kernel)
  for a, b in zip(jax.tree.leaves(want), jax.tree.leaves(got)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_im2col_rows_are_windows():
  x = jnp.arange(2 * 4 * 4 * 1, dtype=jnp.float32).reshape(2, 4, 4, 1)
  rows = conv.im2col(x, (3, 3), (2, 2), ((1, 1), (1, 1)), (2, 2))
  padded = np.pad(np.asarray(x), ((0, 0), (1, 1), (1, 1), (0, 0)))
  # Row of image 1, output pixel (1, 0): the 3x3 window at padded rows 2..4, cols 0..2.
  np.testing.assert_array_equal(rows[4 + 2], padded[1, 2:5, 0:3, 0].ravel())


def test_other_convolutions_fall_back_to_lax():
  x = jnp.ones((1, 6, 6, 4))
  kernel = jnp.ones((3, 3, 2, 4))
  numbers = lax.conv_dimension_numbers(x.shape, kernel.shape, ("NHWC", "HWIO", "NHWC"))
  got = conv.conv_general_dilated(
    x, kernel, (1, 1), "SAME", dimension_numbers=numbers, feature_group_count=2
  )
  want = lax.conv_general_dilated(
    x, kernel, (1, 1), "SAME", dimension_numbers=numbers, feature_group_count=2
  )
  np.testing.assert_array_equal(got, want)


# ----------------------------------------------------------------------------- conv=auto


@pytest.fixture
def cache(tmp_path, monkeypatch):
  from gradamp_jax.training import conv_choice

  monkeypatch.setenv("GRADAMP_JAX_CACHE", str(tmp_path / "cache"))
  conv_choice.fastest.cache_clear()
  yield conv_choice
  conv_choice.fastest.cache_clear()


def auto_config():
  from configs import quickstart

  config = quickstart.get_config()
  assert config.conv == "auto"
  return config


def test_auto_measures_once_and_keeps_the_faster(cache, monkeypatch, capsys):
  monkeypatch.setattr(cache, "measure", lambda: {"lax": 0.3, "im2col": 0.1})
  assert cache.resolve(auto_config()).conv == "im2col"
  (record,) = os.listdir(cache.cache_dir())
  path = os.path.join(cache.cache_dir(), record)
  with open(path) as f:
    assert json.load(f)["choice"] == "im2col"
  assert capsys.readouterr().err == (
    "conv=auto: im2col on this CPU (a ResNet-8's convolutions forward and backward: "
    f"lax 300 ms, im2col 100 ms; kept in {path})\n"
  )

  def must_not_measure():
    raise AssertionError("measured again")

  cache.fastest.cache_clear()
  monkeypatch.setattr(cache, "measure", must_not_measure)
  assert cache.resolve(auto_config()).conv == "im2col"  # from the cache file
  assert capsys.readouterr().err == (
    f"conv=auto: im2col on this CPU (measured before; kept in {path})\n"
  )


def test_the_first_writer_of_a_key_wins(cache, monkeypatch):
  monkeypatch.setattr(cache, "measure", lambda: {"lax": 0.1, "im2col": 0.3})
  assert cache.fastest() == "lax"
  cache.fastest.cache_clear()
  (record,) = os.listdir(cache.cache_dir())
  path = os.path.join(cache.cache_dir(), record)
  cache._write_once(path, dict(choice="im2col"))  # a later writer: ignored
  with open(path) as f:
    assert json.load(f)["choice"] == "lax"


def test_a_recorded_run_keeps_its_choice(cache, monkeypatch, tmp_path):
  monkeypatch.setattr(cache, "measure", lambda: {"lax": 0.1, "im2col": 0.3})
  run = tmp_path / "run"
  run.mkdir()
  (run / "config.json").write_text('{"conv": "im2col"}')
  assert cache.resolve(auto_config(), str(run)).conv == "im2col"  # resume, not lax
  assert cache.resolve(auto_config(), str(tmp_path / "new"), str(run)).conv == "im2col"
  assert cache.resolve(auto_config(), str(tmp_path / "new")).conv == "lax"
  explicit = auto_config()
  explicit.conv = "lax"
  assert cache.resolve(explicit, str(run)).conv == "lax"  # a concrete choice is kept


def test_auto_times_both_implementations():
  from gradamp_jax.training import conv_choice

  seconds = conv_choice.measure(repeats=1)
  assert set(seconds) == {"lax", "im2col"} and all(0 < s < 60 for s in seconds.values())


def test_a_choice_of_an_earlier_measurement_is_measured_again(cache, monkeypatch):
  import hashlib

  old_key = cache.machine_key()  # the key before the measurement was part of it
  digest = hashlib.sha256(json.dumps(old_key, sort_keys=True).encode()).hexdigest()[:16]
  os.makedirs(cache.cache_dir())
  with open(os.path.join(cache.cache_dir(), f"conv-{digest}.json"), "w") as f:
    json.dump(dict(old_key, choice="im2col"), f)  # chosen from one kernel gradient
  monkeypatch.setattr(cache, "measure", lambda: {"lax": 0.1, "im2col": 0.3})
  assert cache.fastest() == "lax"
  records = [
    json.load(open(os.path.join(cache.cache_dir(), n))) for n in os.listdir(cache.cache_dir())
  ]
  assert sorted(r.get("measured", "") for r in records) == ["", cache.MEASUREMENT]
