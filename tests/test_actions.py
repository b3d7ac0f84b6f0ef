"""Per-layer actions (docs/method.md §10): each action's scale against NumPy, its effect on
SGD-momentum and AdamW updates under both placements, the freeze invariant, the lower-tail
rule and an action of one's own."""

import json
import os
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import reference
from test_amplification import make_params, random_grads

import gradamp_jax as ga
from gradamp_jax import actions

SPE = 3  # steps per epoch
PHASES = [(1, 0.1, 0, 1), (4, 0.1, 1, 3)]  # analysis epoch 2, epochs 3-4 act (factor 3)
SHAPES = [[(3, 2)], [(4,)], [(2, 2)], [(5,)]]
BIAS = [1.0, 0.0, 0.3, -0.8]


def numpy_scale(name, selected, z, eligible, factor, params):
  """The per-layer scale of each built-in action, read from docs/method.md §10."""
  if name == "amplify":
    return np.where(selected, factor, 1.0)
  if name == "freeze":
    return np.where(selected, 0.0, 1.0)
  scale = np.clip(1 + params["alpha"] * np.nan_to_num(z), params["lo"], params["hi"])
  return np.where(eligible, scale, 1.0)


@pytest.mark.parametrize("name", ["amplify", "freeze", "scale_by_zscore"])
def test_each_action_scales_layers_as_numpy(name):
  rng = np.random.default_rng(0)
  z = rng.normal(size=7).astype(np.float32) * 2
  z[3] = np.nan  # a layer whose measure was not finite
  selected, eligible = z > 0.5, np.array([1, 1, 1, 1, 1, 0, 1], bool)
  params = actions.check_params(name, dict(alpha=0.7, lo=0.2, hi=1.9) if name[0] == "s" else {})
  selection = actions.Selection(
    jnp.asarray(selected & eligible), jnp.asarray(z), jnp.asarray(eligible), jnp.float32(3.0)
  )
  got = np.asarray(jax.jit(lambda s: actions.layer_scale(name, params, s))(selection))
  want = numpy_scale(name, selected & eligible, z, eligible, 3.0, params)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got.dtype == np.float32


def scaled(tree, scale_of):
  return {n: jax.tree.map(lambda x, s=scale_of[n]: x * s, v) for n, v in tree.items()}


def reference_selection(params, grads, case, threshold):
  """NumPy: G′ of epoch 2's gradients, z-scored, and the rule's choice (every layer
  eligible)."""
  names = sorted(params)
  window = grads[SPE : 2 * SPE]
  values = [reference.measure_g_prime([jax.tree.leaves(g[n]) for g in window]) for n in names]
  z = reference.zscore(values, np.ones(len(names), bool))
  score = {1: z, 2: np.abs(z), 3: -z}[case]
  return z, score > threshold


ACTIONS_AND_PLACEMENTS = [
  ("amplify", 1, {}, "gradients"),
  ("amplify", 1, {}, "updates"),
  ("freeze", 3, {}, "updates"),  # on the gradients it is refused (config_fields)
  ("scale_by_zscore", 1, dict(alpha=0.5, hi=1.6), "gradients"),
  ("scale_by_zscore", 1, dict(alpha=0.5, hi=1.6), "updates"),
]


@pytest.mark.parametrize("base", ["sgd_momentum", "adamw"])
@pytest.mark.parametrize("name,case,action_params,where", ACTIONS_AND_PLACEMENTS)
def test_an_action_scales_the_update_as_the_optimizer_on_scaled_inputs(
  base, name, case, action_params, where
):
  params = jax.tree.map(lambda x: x + 0.5, make_params(SHAPES))
  grads = random_grads(params, np.random.default_rng(1), 4 * SPE, bias=BIAS)
  make = lambda: (
    optax.sgd(0.1, momentum=0.9) if base == "sgd_momentum" else optax.adamw(1e-2, weight_decay=0.1)
  )
  amp = ga.intelligent_amplification(
    PHASES, SPE, measure="G_prime", case=case, threshold=0.5, action=name,
    action_params=action_params,
  )  # fmt: skip
  tx = ga.amplify(make(), amp, where=where)
  z, selected = reference_selection(params, grads, case, 0.5)
  full = actions.check_params(name, action_params)
  scale = numpy_scale(name, selected, z, np.ones(len(z), bool), 3.0, full)
  assert (scale != 1).any() and (scale != scale[0]).any()  # the action tells layers apart
  scale_of = {n: scale[i] for i, n in enumerate(sorted(params))}
  times = lambda tree, on: scaled(tree, scale_of) if on else tree
  plain, p_ref, p_amp = make(), params, params
  ref_state, state = plain.init(params), tx.init(params)
  for t, g in enumerate(grads):
    on = t >= 2 * SPE  # epochs 3-4
    g_in = times(g, on and where == "gradients")
    u_ref, ref_state = plain.update(g_in, ref_state, p_ref)
    u_ref = times(u_ref, on and where == "updates")
    u_amp, state = jax.jit(tx.update)(g, state, p_amp)
    chex.assert_trees_all_close(u_amp, u_ref, rtol=2e-5, atol=1e-7)
    p_ref, p_amp = optax.apply_updates(p_ref, u_ref), optax.apply_updates(p_amp, u_amp)
  rows = ga.selection_report(state, params)
  np.testing.assert_allclose([r["scale"] for r in rows], scale, rtol=1e-6)
  assert [r["selected"] for r in rows] == list(selected)


def test_a_frozen_layer_stays_bitwise_with_momentum_and_weight_decay():
  params = jax.tree.map(lambda x: x + 0.5, make_params(SHAPES))
  grads = random_grads(params, np.random.default_rng(2), 4 * SPE, bias=BIAS)
  amp = ga.intelligent_amplification(
    PHASES, SPE, measure="G_prime", case=3, threshold=0.0, action="freeze"
  )
  tx = ga.amplify(optax.adamw(1e-2, weight_decay=0.1), amp, where="updates")
  state, history = tx.init(params), [params]
  for g in grads:
    updates, state = jax.jit(tx.update)(g, state, params)
    params = optax.apply_updates(params, updates)
    history.append(params)
  z, frozen = reference_selection(history[0], grads, 3, 0.0)
  assert frozen.any() and not frozen.all()
  names = sorted(params)
  for i, name in enumerate(names):
    at_selection = history[2 * SPE][name]  # the parameters before the selection's first step
    for later in history[2 * SPE + 1 :]:
      same = all(
        np.array_equal(a, b)
        for a, b in zip(jax.tree.leaves(at_selection), jax.tree.leaves(later[name]))
      )
      assert same == bool(frozen[i]), (name, z[i])


def test_the_lower_tail_takes_the_least_directional_layers():
  z = jnp.asarray([-2.0, -0.4, 0.1, 1.5, np.nan])
  eligible = jnp.asarray([True, True, True, True, True])
  got = ga.select_layers(z, eligible, case=3, threshold=0.3)
  np.testing.assert_array_equal(got, [True, True, False, False, False])
  with pytest.raises(ValueError, match=r"case must be one of 1 \(upper tail: Ĝ > t\)"):
    ga.select_layers(z, eligible, case=0, threshold=0.3)


def test_bad_actions_and_parameters_are_refused_in_one_line():
  for kwargs, message in (
    (dict(action="shrink"), "action must be one of amplify, freeze, scale_by_zscore, got 'shrink'"),
    (
      dict(action="scale_by_zscore", action_params=dict(alpha=-1)),
      "alpha: must be a finite number >= 0",
    ),
    (dict(action="scale_by_zscore", action_params=dict(lo=2.0)), r"hi: must be above lo \(2\)"),
    (
      dict(action="amplify", action_params=dict(alpha=1)),
      "action 'amplify' has no parameter 'alpha'",
    ),
  ):
    with pytest.raises(ValueError, match=message):
      ga.intelligent_amplification(PHASES, SPE, **kwargs)
  with pytest.raises(ValueError, match="reads the normalized measure, which a random selection"):
    ga.random_amplification(PHASES, SPE, ratio=0.5, action="scale_by_zscore")


def test_an_action_of_ones_own_is_one_definition(monkeypatch):
  monkeypatch.setattr(actions, "ACTIONS", dict(actions.ACTIONS))
  actions.register(
    actions.Action(
      "halve", lambda s, p: jnp.where(s.selected, 0.5, 1.0), {}, False, False, "a test"
    )
  )
  with pytest.raises(ValueError, match="'halve' is already registered; pass replace=True"):
    actions.register(actions.ACTIONS["halve"])
  with pytest.raises(ValueError, match="'freeze' is already built-in"):
    actions.register(actions.ACTIONS["freeze"], replace=True)
  params = jax.tree.map(lambda x: x + 0.5, make_params(SHAPES))
  grads = random_grads(params, np.random.default_rng(3), 3 * SPE, bias=BIAS)
  tx = ga.random_amplification(PHASES, SPE, ratio=0.5, action="halve", seed=1)
  state = tx.init(params)
  for g in grads:
    out, state = jax.jit(tx.update)(g, state)
  rows = ga.selection_report(state, params)
  assert [r["scale"] for r in rows] == [0.5 if r["selected"] else 1.0 for r in rows]
  assert sum(r["selected"] for r in rows) == 2  # round(0.5 × 4)
  for r, name in zip(rows, sorted(params)):
    chex.assert_trees_all_close(
      out[name], scaled({name: grads[-1][name]}, {name: r["scale"]})[name]
    )


@pytest.mark.slow  # trains a run
def test_an_action_of_ones_own_drives_a_training_run(tmp_path, monkeypatch):
  from test_train import mock_cifar, read, tiny_config

  from gradamp_jax.training import train

  monkeypatch.setattr(actions, "ACTIONS", dict(actions.ACTIONS))
  actions.register(
    actions.Action("halve", lambda s, p: jnp.where(s.selected, 0.5, 1.0), {}, False, False, "")
  )
  config = tiny_config(action="halve", threshold=0.3)  # G, case 2: |Ĝ| > 0.3
  with mock_cifar():
    train.train_and_evaluate(config, str(tmp_path))
  stats = read(str(tmp_path / "layer_stats.jsonl"))
  assert {r["action"] for r in stats} == {"halve"} and any(r["selected"] for r in stats)
  assert all(r["scale"] == (0.5 if r["selected"] else 1.0) for r in stats)
  metrics = read(str(tmp_path / "metrics.jsonl"))
  assert metrics[-1]["amplified_layers"] == sum(r["selected"] for r in stats)


# A config file of a user's own, outside the package: it registers an action with a parameter
# when read, and sets the parameter as a config field.
OWN_ACTION_FILE = """
import jax.numpy as jnp

from configs import quickstart
from gradamp_jax import actions

actions.register(
  actions.Action(
    "damp",
    lambda s, p: jnp.where(s.selected, p["gamma"], 1.0),
    {"gamma": actions.Param(0.5, lambda x: 0 <= x <= 1, "a number in [0, 1]")},
    uses_measure=False,
    updates_only=False,
    reference="the selected layers x gamma",
  ),
  replace=True,  # a process may read the file more than once
)


def get_config():
  config = quickstart.get_config()
  config.amplification.action = "damp"
  config.amplification.gamma = 0.25
  return config
"""
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_own_action(tmp_path, *overrides):
  """tests/fault_run.py (the command line on mock CIFAR, tiny) with the file above."""
  config_file = tmp_path / "own_action.py"
  config_file.write_text(OWN_ACTION_FILE)
  return subprocess.run(
    [sys.executable, os.path.join(ROOT, "tests", "fault_run.py"), str(tmp_path / "run")]
    + ["--config.phases=((2, 0.05, 1, 2),)", *overrides],  # analyse epoch 1, damp epoch 2
    capture_output=True,
    text=True,
    timeout=600,
    cwd=ROOT,
    env=dict(os.environ, FAULT_CONFIG=str(config_file)),
  )


def own_action_config(monkeypatch, tmp_path):
  """The config of the file above, read here (its action registered in a copy of ACTIONS)."""
  import importlib.util

  monkeypatch.setattr(actions, "ACTIONS", dict(actions.ACTIONS))
  (tmp_path / "own_action.py").write_text(OWN_ACTION_FILE)
  spec = importlib.util.spec_from_file_location("own_action", tmp_path / "own_action.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config()
  config.lock()  # as the command line reads it
  return config


def test_a_registered_actions_parameter_is_a_config_field(monkeypatch, tmp_path):
  from gradamp_jax.training import config_fields, optimizer

  config = own_action_config(monkeypatch, tmp_path)
  config_fields.validate_config(config)  # set in the file
  assert optimizer.action_params(config.amplification) == {"gamma": 0.25}
  config_fields.apply_overrides(config, ["--config.amplification.gamma=1"])
  config_fields.validate_config(config)
  assert optimizer.action_params(config.amplification) == {"gamma": 1.0}
  with config.unlocked():
    del config.amplification["gamma"]  # not set: the Param's default
  config_fields.validate_config(config)
  assert actions.check_params("damp", optimizer.action_params(config.amplification)) == {
    "gamma": 0.5
  }
  config_fields.apply_overrides(config, ["--config.amplification.gamma=0.75"])  # not in it
  assert config.amplification.gamma == 0.75 and config.is_locked
  for override, message in (
    ("gamma=2", "config.amplification.gamma: must be a number in [0, 1], got 2.0"),
    ("gamma=x", "config.amplification.gamma: must be a number in [0, 1], got 'x'"),
    ("gama=0.1", "config.amplification.gama: unknown field; did you mean amplification.gamma?"),
  ):
    with pytest.raises(ValueError) as info:
      config_fields.apply_overrides(config, [f"--config.amplification.{override}"])
      config_fields.validate_config(config)
    assert str(info.value) == message
  config.amplification.gamma = -1.0  # in the file
  with pytest.raises(ValueError, match=r"^config.amplification.gamma: must be a number in \[0"):
    config_fields.validate_config(config)


def test_an_action_parameter_may_not_take_a_selection_fields_name(monkeypatch):
  from configs import quickstart
  from gradamp_jax.training import config_fields

  monkeypatch.setattr(actions, "ACTIONS", dict(actions.ACTIONS))
  param = actions.Param(1.0, lambda x: x > 0, "a number > 0")
  with pytest.raises(ValueError, match="Action.params: names must be Python identifiers, got"):
    actions.register(
      actions.Action("cut", lambda s, p: s.factor, {"my-t": param}, False, False, "")
    )
  actions.register(
    actions.Action("cut", lambda s, p: s.factor, {"threshold": param}, False, False, "")
  )
  config = quickstart.get_config()
  config.amplification.action = "cut"
  with pytest.raises(ValueError) as info:
    config_fields.validate_config(config)
  assert str(info.value) == (
    "config.amplification.action: 'cut' has a parameter 'threshold', which is the "
    "selection's field amplification.threshold; give the parameter another name"
  )


@pytest.mark.slow  # trains a run
def test_a_registered_actions_parameter_is_a_config_field_end_to_end(tmp_path):
  result = run_own_action(tmp_path, "--config.amplification.gama=0.125")
  assert result.returncode == 2, result.stderr[-3000:]
  assert result.stderr == (
    "error: config.amplification.gama: unknown field; did you mean amplification.gamma?\n"
  )
  result = run_own_action(tmp_path, "--config.amplification.gamma=0.125")  # the file: 0.25
  assert result.returncode == 0, result.stderr[-3000:]
  workdir = tmp_path / "run"
  with open(workdir / "config.json") as f:
    recorded = json.load(f)["amplification"]
  assert (recorded["action"], recorded["gamma"]) == ("damp", 0.125)
  with open(workdir / "layer_stats.jsonl") as f:
    stats = [json.loads(line) for line in f]
  assert {r["action"] for r in stats} == {"damp"} and any(r["selected"] for r in stats)
  assert [r["scale"] for r in stats] == [0.125 if r["selected"] else 1.0 for r in stats]


def test_a_registered_actions_parameter_is_a_cohort_field_traced_per_member(monkeypatch, tmp_path):
  """A cohort's members may differ in a registered action's parameter: each member's value
  is traced (its own in the one program); a member that leaves it out takes the default."""
  from gradamp_jax.training import cohort

  config = own_action_config(monkeypatch, tmp_path)
  configs, workdirs = cohort.members_of(config, str(tmp_path), ["amplification.gamma=0.125,1"])
  assert [c.amplification.gamma for c in configs] == [0.125, 1.0]
  cohort.check_cohort(configs, workdirs)
  assert cohort.groups(configs, 2) == [[0, 1]]
  np.testing.assert_array_equal(cohort.member_rules(configs)["gamma"], [0.125, 1.0])
  with config.unlocked():
    del config.amplification["gamma"]
  np.testing.assert_array_equal(cohort.member_rules([config])["gamma"], [0.5])


def test_an_epoch_line_says_what_the_action_does():
  from gradamp_jax.training.outputs import describe_scales

  assert describe_scales("amplify", np.array([2.0, 1.0, 2.0, 2.0])) == "amplified 3 layers"
  assert describe_scales("freeze", np.array([0.0, 1.0, 0.0])) == "froze 2 layers"
  assert describe_scales("own", np.array([0.5, 1.0])) == "scaled 1 layer by 0.5"
  assert describe_scales("scale_by_zscore", np.array([0.6, 1.4, 1.0, 0.9])) == (
    "scaled 3 layers by 0.6–1.4"
  )
  assert describe_scales("amplify", np.ones(4)) == describe_scales("amplify", np.ones(0))
  assert describe_scales("amplify", np.ones(0)) == "no layer acted on"
