"""Every bad config or override is a ValueError naming its field; every good one trains.

Property-based: each field's allowed values are restated here, independently of
``gradamp_jax.training.config_fields``; hypothesis draws configs and ``--config.field=value``
strings mixing allowed and disallowed values and checks the verdict and the field named.
"""

import math
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from configs import default
from gradamp_jax import models, run_folder
from gradamp_jax.training import config_fields, optimizer
from gradamp_jax.training import steps as steps_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEVICES = jax.device_count()  # 2 (tests/conftest.py)
EXAMPLES = {"configs": 700, "overrides": 400, "steps": 3}

finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
words = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
not_numbers = st.one_of(st.none(), words, st.booleans())


def phases_strategy():
  @st.composite
  def phases(draw):
    n = draw(st.integers(1, 4))
    ends = sorted(draw(st.sets(st.integers(1, 200), min_size=n, max_size=n)))
    return tuple(
      (
        e,
        draw(st.floats(1e-4, 1.0)),
        draw(st.sampled_from([0, 1, True, False])),
        draw(st.floats(0.5, 4.0)),
      )
      for e in ends
    )

  bad = st.one_of(
    st.just(()),
    st.just(((3, 0.1, 0, 1), (2, 0.1, 1, 2))),  # end epochs decrease
    st.tuples(st.tuples(st.integers(-5, 0), st.just(0.1), st.just(0), st.just(1))),
    st.tuples(st.tuples(st.just(2), st.floats(-1, 0), st.just(0), st.just(1))),
    st.tuples(st.tuples(st.just(2), st.just(0.1), st.just(1), non_finite)),
    st.tuples(st.tuples(st.just(2), st.just(0.1), st.just(1))),  # three entries
    st.tuples(
      st.tuples(st.just(2), st.just(0.1), st.sampled_from(["x", None, math.nan]), st.just(2))
    ),  # is_amp not 0/1/bool
    words,
  )
  return phases(), bad


def int_field(low, high=None):
  good = st.integers(low, high if high is not None else low + 10_000)
  bad = st.one_of(
    st.integers(max_value=low - 1),
    st.integers(min_value=high + 1) if high is not None else st.nothing(),
    st.integers(-1000, 1000).map(lambda i: i + 0.5),
    non_finite,
    words,
    st.booleans(),
  )
  return good, bad


def number_field(low, high, high_open):
  good = st.floats(low, high, exclude_max=high_open)
  bad = st.one_of(
    st.floats(max_value=low, exclude_max=True, allow_infinity=False),
    st.floats(min_value=high, exclude_min=not high_open, allow_infinity=False),
    non_finite,
    not_numbers,
  )
  return good, bad


def positive_number():
  good = st.floats(min_value=1e-12, max_value=1e3)
  bad = st.one_of(st.floats(max_value=0, allow_infinity=False), non_finite, not_numbers)
  return good, bad


def non_negative_number():
  good = st.floats(min_value=0, max_value=1e3)
  bad = st.one_of(
    st.floats(max_value=0, exclude_max=True, allow_infinity=False), non_finite, not_numbers
  )
  return good, bad


def choice_field(options):
  return st.sampled_from(options), st.one_of(
    words.filter(lambda w: w not in options), st.integers(), st.none()
  )


def even_batch():
  good = st.integers(1, 64).map(lambda k: k * DEVICES)
  bad = st.one_of(
    st.integers(max_value=0),
    st.integers(1, 64).map(lambda k: k * DEVICES + 1),
    st.floats(1, 64),
    words,
    st.booleans(),
  )
  return good, bad


# field: (allowed values, disallowed values), as the README and configs/default.py describe.
DOMAINS = {
  "model": choice_field(models.MODEL_NAMES),
  "width": positive_number(),
  "dataset": choice_field(("cifar10", "cifar100")),
  "data_dir": (
    st.one_of(st.none(), words),
    st.one_of(st.just(""), st.just("  "), st.integers(), st.booleans()),
  ),
  "download": (st.booleans(), st.one_of(st.integers(), words)),
  "image_folder": (st.none(), st.one_of(st.just("/no/such/folder"), st.just(""), st.integers())),
  "train_split": (
    st.sampled_from(
      ["train", "train[:20%]", "train[10:40]", "train[:48]", "train[-10%:]", "train+test[:50%]"]
    ),
    st.one_of(
      st.sampled_from(["", "train[", "train]", "train[::]", "[:5]", "validation", "None"]),
      st.integers(),
      st.none(),
    ),
  ),
  "validation_fraction": number_field(0, 1, high_open=True),
  "batch_size": even_batch(),
  "eval_batch_size": even_batch(),
  "phases": phases_strategy(),
  "optimizer": choice_field(("sgd", "adamw", "lamb", "lars")),
  "momentum": number_field(0, 1, high_open=True),
  "adam_b1": number_field(0, 1, high_open=True),
  "adam_b2": number_field(0, 1, high_open=True),
  "adam_eps": positive_number(),
  "lars_trust_coefficient": positive_number(),
  "weight_decay": (
    st.floats(min_value=0, allow_infinity=False),
    st.one_of(
      st.floats(max_value=0, exclude_max=True, allow_infinity=False), non_finite, not_numbers
    ),
  ),
  "seed": int_field(0, 2**31 - 1),
  "half_precision": (st.booleans(), st.one_of(st.integers(), words, st.none())),
  "conv": choice_field(("auto", "lax", "im2col")),
  "track_directionality": (st.booleans(), st.one_of(st.integers(), words, st.none())),
  "tracked_measures": (
    st.lists(st.sampled_from(["G", "G_prime", "GSNR"]), min_size=1, max_size=3, unique=True).map(
      tuple
    ),
    st.one_of(
      st.sampled_from([(), ("G", "G"), ("nope",), ("G", "g"), "G"]), st.none(), st.integers()
    ),
  ),
  "keep_checkpoints": int_field(1),
  "steps_per_dispatch": int_field(0),
  "amplification.method": choice_field(("none", "intelligent", "random", "matched_random", "all")),
  "amplification.measure": choice_field(("G", "G_prime", "GSNR")),
  "amplification.case": (
    st.sampled_from([1, 2, 3]),
    st.one_of(
      st.integers().filter(lambda x: x not in (1, 2, 3)), st.sampled_from([True, 1.0, "1"])
    ),
  ),
  "amplification.action": choice_field(("amplify", "freeze", "scale_by_zscore")),
  "amplification.alpha": non_negative_number(),
  "amplification.lo": non_negative_number(),
  "amplification.hi": non_negative_number(),
  "amplification.threshold": (finite, st.one_of(non_finite, not_numbers)),
  "amplification.reselect_every": int_field(0),
  "amplification.ratio": number_field(0, 1, high_open=False),
  "amplification.eligible": choice_field(("all", "kernels")),
  "amplification.where": choice_field(("gradients", "updates")),
}
FIELDS = sorted(DOMAINS)


def test_every_config_field_has_a_domain_here():
  assert sorted(run_folder.flat_config(default.get_config())) == FIELDS


def tiny_config():
  config = default.get_config()
  config.model, config.batch_size, config.eval_batch_size = "resnet8", 8, 16
  config.phases = ((1, 0.05, 0, 1), (3, 0.05, 1, 2))
  return config


def set_field(config, field, value):
  """Sets a value of any type as is (ConfigDict would turn False into 0.0 for a float)."""
  node, _, leaf = field.rpartition(".")
  target = config[node] if node else config
  with target.unlocked():
    del target[leaf]
    target[leaf] = value


@st.composite
def mutations(draw):
  """1–3 fields with values, each allowed or not; returns (changes, disallowed fields)."""
  fields = draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=3, unique=True))
  changes, bad = {}, set()
  for field in fields:
    allowed = draw(st.booleans())
    changes[field] = draw(DOMAINS[field][0 if allowed else 1])
    if not allowed:
      bad.add(field)
  return changes, bad


def named_field(message):
  match = re.match(r"config\.([\w.]+)", message)
  assert match, f"message does not start with the field: {message!r}"
  return match.group(1)


def untracked_measure(config) -> bool:
  """The rule across fields: a tracking run selects by a measure it tracks."""
  amp = config.amplification
  return (
    config.track_directionality is True
    and amp.method in ("intelligent", "matched_random")
    and amp.measure not in config.tracked_measures
  )


def action_conflict(config):
  """The rules across fields of an action, as the field the refusal names (or None)."""
  amp = config.amplification
  if amp.method == "none":
    return None
  if amp.action == "freeze" and amp.where != "updates":
    return "amplification.action"
  if amp.action == "scale_by_zscore" and amp.method != "intelligent":
    return "amplification.action"
  if amp.action == "scale_by_zscore" and not amp.lo < amp.hi:
    return "amplification.hi"
  return None


def every_layer_threshold(config):
  """The rule across fields of a threshold: case 2 (|Ĝ| > t) of a measure's rule refuses
  t <= 0, which selects every layer, unless the action reads no selection."""
  amp = config.amplification
  if (
    amp.method in ("intelligent", "matched_random")
    and amp.action != "scale_by_zscore"
    and amp.case == 2
    and amp.threshold <= 0
  ):
    return "amplification.threshold"
  return None


def cross_field_problem(config):
  """The field a valid-field config is refused for by a rule across fields, or None."""
  if untracked_measure(config):
    return "amplification.measure"
  return action_conflict(config) or every_layer_threshold(config)


@settings(
  max_examples=EXAMPLES["configs"],
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(
  mutations(),
  st.one_of(st.none(), words.filter(lambda w: w not in FIELDS and w != "amplification")),
)
def test_generated_configs(mutation, unknown):
  changes, bad = mutation
  config = tiny_config()
  for field, value in changes.items():
    set_field(config, field, value)
  if unknown is not None:
    with config.unlocked():
      config[unknown] = 1
    bad = bad | {unknown}
  if not bad and cross_field_problem(config):
    bad = {cross_field_problem(config)}
  if not bad:
    config_fields.validate_config(config)  # no exception
    return
  with pytest.raises(ValueError) as info:
    config_fields.validate_config(config)
  field = named_field(str(info.value))
  # The amplification transforms report under "config.amplification".
  assert field in bad or (
    field == "amplification" and any(f.startswith("amplification.") for f in bad)
  ), (field, bad, str(info.value))
  assert "\n" not in str(info.value)


def override_text(value):
  if isinstance(value, bool):
    return str(value).lower()
  return repr(value) if isinstance(value, tuple) else str(value)


@st.composite
def overrides(draw):
  """An override string and the verdict: (text, disallowed field or None)."""
  kind = draw(st.sampled_from(["good", "bad", "garbage", "unknown"]))
  field = draw(st.sampled_from(FIELDS))
  if kind == "unknown":
    name = draw(
      st.one_of(
        words.filter(lambda w: w not in FIELDS and w != "amplification"),
        st.just("amplification.nosuchfield"),
        st.just("amplification"),
      )
    )
    return f"--config.{name}={draw(words)}", name
  if kind == "garbage":  # text that only a free-text field accepts
    text = f"#{draw(words)}"
  else:
    text = override_text(draw(DOMAINS[field][0 if kind == "good" else 1]))
  return f"--config.{field}={text}", None if override_allowed(field, text, kind) else field


def override_allowed(field, text, kind):
  """Whether override ``text`` is allowed: as drawn, except where text reads otherwise."""
  if field == "data_dir":  # any text is a path; empty or None is the TFDS default
    return True
  if field == "image_folder":  # only None: other folders do not exist
    return text.strip() in ("", "None", "none")
  if field in ("download", "half_precision", "track_directionality"):
    return text.strip().lower() in ("true", "false", "1", "0", "yes", "no")
  if field == "amplification.case":
    return text.strip() in ("1", "2", "3")
  return kind == "good"


@settings(
  max_examples=EXAMPLES["overrides"],
  deadline=None,
  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
@given(overrides())
def test_generated_override_strings(case):
  text, bad = case
  config = tiny_config()
  try:
    config_fields.apply_overrides(config, [text])
    if bad is None:
      bad = cross_field_problem(config)
    config_fields.validate_config(config)
  except ValueError as e:
    assert bad is not None, f"{text} refused: {e}"
    named = named_field(str(e))
    assert named == bad or (named == "amplification" and bad.startswith("amplification.")), (
      text,
      str(e),
    )
  else:
    assert bad is None, f"{text} accepted"


def test_override_converts_to_the_field_type():
  config = tiny_config()
  config_fields.apply_overrides(
    config,
    [
      "--config.seed=7",
      "--config.download=false",
      "--config.momentum=0",
      "--config.phases=((2, 0.1, 0, 1), (4, 0.01, 1, 2))",
      "--config.data_dir=/tmp/x",
      "amplification.threshold=1",
      "--config.image_folder=None",
    ],
  )
  assert (config.seed, config.download, config.momentum) == (7, False, 0.0)
  assert isinstance(config.momentum, float) and isinstance(config.amplification.threshold, float)
  assert config.phases == ((2, 0.1, 0, 1), (4, 0.01, 1, 2))
  assert config.data_dir == "/tmp/x" and config.image_folder is None


@st.composite
def valid_small_configs(draw):
  config = tiny_config()
  for field in FIELDS:
    if field in (
      "model",
      "width",
      "phases",
      "batch_size",
      "eval_batch_size",
      "train_split",
      "image_folder",
    ) or not draw(st.booleans()):
      continue
    set_field(config, field, draw(DOMAINS[field][0]))
  amp = config.amplification
  if amp.measure not in config.tracked_measures:  # validate_config refuses it (tested apart)
    config.tracked_measures = (*config.tracked_measures, amp.measure)
  if amp.action == "freeze":  # the rules across an action's fields (tested apart)
    amp.where = "updates"
  if amp.action == "scale_by_zscore":
    amp.method = "intelligent"
    amp.hi = max(amp.hi, amp.lo + 1.0)
  if every_layer_threshold(config):
    amp.threshold = 1.0
  config.batch_size = draw(st.sampled_from([2, 4]))
  config.phases = draw(DOMAINS["phases"][0])
  return config


@settings(
  max_examples=EXAMPLES["steps"], deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(valid_small_configs())
def test_valid_configs_build_and_run_a_step(config):
  config_fields.validate_config(config)
  steps_per_epoch = 2
  tx = optimizer.create_optimizer(config, steps_per_epoch)
  graphdef, state = steps_lib.create_train_state(config, 10, tx)
  rng = np.random.default_rng(config.seed)
  batch = dict(
    image=jnp.asarray(rng.normal(size=(config.batch_size, 32, 32, 3)), jnp.float32),
    label=jnp.asarray(rng.integers(0, 10, config.batch_size), jnp.int32),
  )
  state, metrics = jax.jit(steps_lib.make_train_step(graphdef, tx))(state, batch)
  assert int(state.step) == 1 and np.isfinite(float(metrics["loss"]))


@pytest.mark.parametrize(
  "override, message",
  [
    ("--config.nosuchfield=1", "config.nosuchfield: unknown field; known fields: "),
    (
      "--config.amplification.treshold=1",
      "config.amplification.treshold: unknown field; did you mean amplification.threshold?",
    ),
    ("--config.seed=-1", "config.seed: must be an integer in [0, 2147483647], got -1"),
    ("--config.seed=abc", "config.seed: must be an integer in [0, 2147483647], got 'abc'"),
    ("--config.phases=((2, 0.1, 0, 1), (1, 0.1, 1, 2))", "config.phases: phases[1]"),
    ('--config.phases=((2, 0.1, "x", 1),)', "config.phases: phases[0]=(2, 0.1, 'x', 1): is_amp"),
    ("--config.amplification=3", "config.amplification: is a group of fields"),
  ],
)
def test_command_line_explains_bad_input_in_one_line(tmp_path, override, message):
  # data_dir holds no data and download is off: reading data would fail differently.
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "gradamp_jax.main",
      "--config",
      "configs/quickstart.py",
      "--workdir",
      str(tmp_path / "run"),
      "--config.download=false",
      f"--config.data_dir={tmp_path}",
      override,
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith(f"error: {message}"), result.stderr
  assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
  assert not os.path.exists(tmp_path / "run")  # nothing written either


def test_a_bad_config_argument_is_one_line_without_the_exception_class(tmp_path):
  result = subprocess.run(
    [
      sys.executable,
      "-m",
      "gradamp_jax.main",
      "--config",
      "configs/quickstart.py:methd=none",
      "--workdir",
      str(tmp_path / "run"),
    ],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 2, result.stderr
  assert result.stderr.startswith("error: ") and "methd" in result.stderr, result.stderr
  assert "Error:" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_measure_added_after_import_is_accepted_and_listed(monkeypatch):
  from gradamp_jax import measures

  mine = measures.MEASURES["G"]._replace(name="mine", label="mine")
  monkeypatch.setitem(measures.MEASURES, "mine", mine)
  config = default.get_config()
  config.tracked_measures = ("G", "mine")
  config.amplification.measure = "mine"
  config_fields.validate_config(config)
  config.amplification.measure = "yours"
  with pytest.raises(ValueError, match=r"amplification.measure: must be one of G, .*, mine, got"):
    config_fields.validate_config(config)
