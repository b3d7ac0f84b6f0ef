"""Cohorts: members against their runs alone, a member that diverges, and refusals.

The fault chain of a cohort (kill -9, SIGTERM, a truncated newest checkpoint) is in
tests/test_faults.py, beside the run's.
"""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from benchmarks import gpu_checks, harness
from gradamp_jax import analysis, run_folder
from gradamp_jax.sweeps import launcher as sweep
from gradamp_jax.training import cohort, train
from gradamp_jax.training import data as data_lib
from gradamp_jax.training import steps as steps_lib
from tests import slurm_sweep
from tests.test_input_pipeline import _write_folder
from tests.test_train import mock_cifar, read, tiny_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = pytest.mark.slow  # trains runs end to end

# Three members of one program: one to compare with its run alone, one with NumPy, one
# whose factor (alpha = hi = 1e30 on the updates) makes its parameters overflow once it
# acts (epoch 3).
MEMBERS = [dict(seed=0, alpha=0.5, hi=2.0), dict(seed=1, alpha=1.0, hi=2.0)]
DIVERGING = dict(seed=0, alpha=1e30, hi=1e30)


def member_config(seed, alpha, hi):
  config = tiny_config(
    action="scale_by_zscore", where="updates", alpha=alpha, hi=hi, lo=0.0, measure="G_prime"
  )
  config.seed = seed
  config.validation_fraction = 0.25  # each member holds out its own validation examples
  return config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("cohort")
  configs = [member_config(**m) for m in MEMBERS + [DIVERGING]]
  workdirs = [str(root / f"member{k}") for k in range(len(configs))]
  with mock_cifar():
    alone = [str(root / "alone0")]  # member 0 alone; member 1 is checked against NumPy
    train.train_and_evaluate(configs[0], alone[0])
    with pytest.raises(train.NonFiniteError) as error:
      train.train_cohort(configs, workdirs, stacked=True)
  return workdirs, alone, str(error.value)


def test_a_member_acts_with_its_own_alpha(trained):
  """Member 1 (alpha 1) scales each layer by clip(1 + 1 · Ĝ′, 0, 2), member 0 by
  clip(1 + 0.5 · Ĝ′, 0, 2), from their own z-scores."""
  workdirs, _, _ = trained
  for workdir, m in zip(workdirs, MEMBERS):
    stats = read(os.path.join(workdir, "layer_stats.jsonl"))
    normalized = np.array([r["normalized"] for r in stats])
    want = np.clip(1 + m["alpha"] * normalized, 0.0, m["hi"])
    np.testing.assert_allclose([r["scale"] for r in stats], want, rtol=1e-6)
    assert len(set(np.round(want, 4))) > 2  # a continuous action, not two values


def test_a_member_equals_its_run_alone_up_to_rounding(trained):
  """Rows, selections and final state within the GPU suite's cohort tolerances (the same
  comparison as its check, benchmarks/gpu_checks.py)."""
  workdirs, alone, _ = trained
  for member, single in zip(workdirs, alone):
    assert sorted(os.listdir(member)) == sorted(os.listdir(single))
    assert [r["epoch"] for r in read(os.path.join(member, "metrics.jsonl"))] == [1, 2, 3]
    check = gpu_checks.compare_runs("member", [(member, single)], gpu_checks.COHORT)
    assert check.passed, check.line()
    info, single_info = (run_folder.read_json(w, run_folder.RUN_INFO) for w in (member, single))
    assert info["data_fingerprint"] == single_info["data_fingerprint"]  # its own hold-out
    assert info["cohort"] == dict(size=3, members=workdirs, index=workdirs.index(member))


def test_the_suites_cohort_check_fails_for_a_member_off_by_more_than_rounding(trained):
  """A PASS of the GPU suite's check means something: the member's state moved by half of
  one array's largest value (a factor, layer or member gone wrong), its training loss by
  1e-3 (other data or steps), or one selection flipped, fails it."""
  workdirs, alone, _ = trained
  member, single = gpu_checks.read_run(workdirs[0]), gpu_checks.read_run(alone[0])
  assert gpu_checks.compare_runs("as trained", [(member, single)], gpu_checks.COHORT).passed
  leaves = list(member.leaves)
  leaves[1] = leaves[1] + 0.5 * np.abs(leaves[1]).max()
  check = gpu_checks.compare_runs(
    "moved", [(member._replace(leaves=leaves), single)], gpu_checks.COHORT
  )
  assert not check.passed and "state differs by 0.5" in check.line()
  metrics = [dict(r) for r in member.rows["metrics.jsonl"]]
  metrics[-1]["train_loss"] *= 1 + 1e-3
  rows = dict(member.rows, **{"metrics.jsonl": metrics})
  check = gpu_checks.compare_runs(
    "other loss", [(member._replace(rows=rows), single)], gpu_checks.COHORT
  )
  assert not check.passed and "train_loss differs by 0.001" in check.line()
  stats = [dict(r) for r in member.rows["layer_stats.jsonl"]]
  stats[0]["selected"] = not stats[0]["selected"]
  rows = dict(member.rows, **{"layer_stats.jsonl": stats})
  check = gpu_checks.compare_runs(
    "flipped", [(member._replace(rows=rows), single)], gpu_checks.COHORT
  )
  assert check.line().startswith("FAIL flipped: ") and "selections differ" in check.line()


def test_the_suites_nan_check_fails_for_the_summed_gradient_on_a_cpu(monkeypatch):
  """With the members' summed gradient (the GPU's formulation), which XLA:CPU computes as one
  masked convolution, the NaN member's gradient reaches the others and the GPU suite's NaN
  check fails (it passes on a CPU's own program: CI's ``gpu_suite.py --tiny``)."""
  always_summed = functools.partial(steps_lib.members_value_and_grad, summed=True)
  monkeypatch.setattr(steps_lib, "members_value_and_grad", lambda *a, **_: always_summed(*a))
  monkeypatch.setattr(harness, "_COHORT_CHUNKS", {})
  check = gpu_checks.nan_stays_its_own("resnet8", "float32", 8, 1, 2)
  assert not check.passed and check.numbers["arrays_differing"] > 0, check.line()


def test_a_diverging_member_is_named_and_the_others_finish(trained):
  workdirs, _, message = trained
  assert f"cohort member {workdirs[2]}: non-finite loss or gradients at epoch 3" in message
  assert workdirs[0] not in message and workdirs[1] not in message
  rows = read(os.path.join(workdirs[2], "metrics.jsonl"))
  assert [r["epoch"] for r in rows] == [1, 2]  # its last good epoch; its checkpoint is kept
  steps = run_folder.read_json(workdirs[2], run_folder.RUN_INFO)["steps_per_epoch"]  # 36 / 8
  assert max(int(s) for s in os.listdir(os.path.join(workdirs[2], "checkpoints"))) == 2 * steps
  for workdir in workdirs[:2]:
    assert all(np.isfinite(r["train_loss"]) for r in read(os.path.join(workdir, "metrics.jsonl")))


def test_the_analysis_reads_members_like_runs(trained):
  workdirs, alone, _ = trained
  runs = analysis.load_runs(os.path.dirname(workdirs[0])).set_index("workdir")
  assert runs.loc[workdirs, "finished"].tolist() == [True, True, False]  # the diverged one
  assert runs.loc[workdirs[:2], "action_params"].tolist() == [
    "alpha=0.5 hi=2 lo=0",
    "alpha=1 hi=2 lo=0",
  ]
  assert runs.loc[workdirs[0], "final_test_accuracy"] == pytest.approx(
    runs.loc[alone[0], "final_test_accuracy"]
  )


def test_a_finished_cohort_is_done_at_once(trained, capsys):
  workdirs, _, _ = trained
  configs = [member_config(**m) for m in MEMBERS]
  rows = train.train_cohort(configs, workdirs[:2])
  assert [r["epoch"] for r in rows] == [3, 3]
  assert capsys.readouterr().out.count("nothing to do") == 2


def test_configs_that_differ_outside_the_cohort_fields_are_refused(tmp_path):
  a, b = tiny_config(), tiny_config()
  b.batch_size = 4
  with pytest.raises(ValueError, match=r"^config.batch_size: cohort members must share it "):
    cohort.check_cohort([a, b], [str(tmp_path / "a"), str(tmp_path / "b")])
  b = tiny_config(case=1)
  with pytest.raises(ValueError, match=r"member 0: 2, member 1: 1\); a cohort's runs may"):
    cohort.check_cohort([a, b], [str(tmp_path / "a"), str(tmp_path / "b")])
  with pytest.raises(ValueError, match="each cohort member needs its own"):
    cohort.check_cohort([a, a], [str(tmp_path / "a")] * 2)
  with pytest.raises(ValueError, match=r"^--cohort model: a cohort's runs may differ only in"):
    cohort.members_of(a, str(tmp_path), ["model=vgg11,resnet8"])
  with pytest.raises(ValueError, match="amplification.threshold"):
    cohort.members_of(a, str(tmp_path), ["amplification.threshold=0.5,x"])
  configs, workdirs = cohort.members_of(
    a, str(tmp_path), ["seed=0,1", "amplification.threshold=0.5,1"]
  )
  assert [(c.seed, c.amplification.threshold) for c in configs] == [
    (0, 0.5),
    (0, 1.0),
    (1, 0.5),
    (1, 1.0),
  ]
  assert os.path.basename(workdirs[1]) == "seed=0-amplification.threshold=1"
  assert json.loads(configs[3].to_json_best_effort())["model"] == "resnet8"


def test_cohort_auto_takes_the_largest_size_that_fits_the_memory(tmp_path, monkeypatch, capsys):
  """XLA's planned memory grows by one member's share per member (K = 1, 2, 3), so the line
  through K = 1 and 2 predicts K = 3; the launcher's ``--cohort auto`` groups by the K it
  chose for a memory of 3.5 members, and says so."""
  monkeypatch.chdir(ROOT)
  _write_folder(tmp_path / "images", {"train": {"a": 16, "b": 16}, "test": {"a": 4, "b": 4}})
  config = slurm_sweep.get_config()
  config.image_folder = str(tmp_path / "images")
  dataset = data_lib.load_dataset(config)
  planned = {k: cohort.planned_cohort_bytes(config, dataset, k) for k in (1, 2, 3)}
  per_member = planned[2] - planned[1]
  assert planned[3] - planned[2] == pytest.approx(per_member, rel=0.02)
  shared = planned[1] - per_member
  capacity = (shared + 3.5 * per_member) / cohort.MEMORY_MARGIN
  assert cohort.largest_fitting({1: planned[1], 2: planned[2]}, capacity)[0] == 3
  argv = ["--config", "tests/slurm_sweep.py", "--sweep", "grid=seeds", "--root", str(tmp_path)]
  argv += ["--mode", "print", "--cohort", "auto", f"--config.image_folder={tmp_path}/images"]
  names = sweep.main([*argv, "--cohort_memory_gib", str(capacity / 2**30)])
  out = capsys.readouterr().out
  assert "--cohort auto: K = 3 for resnet8 on " in out and "within 80% of" in out
  assert names == [["seed=0", "seed=1"]]  # the sweep's two runs: one cohort of at most 3
  assert "--cohort 3 --cohort_index 0" in out
  names = sweep.main([*argv, "--cohort_memory_gib", str((shared + 1.5 * per_member) / 0.8 / 2**30)])
  assert names == [["seed=0"], ["seed=1"]] and "K = 1 " in capsys.readouterr().out


def _two_members(conv):
  config = tiny_config()
  config.conv = conv
  rng = np.random.default_rng(0)
  members = []
  for seed in (0, 1):
    config.seed = seed
    graphdef, state = steps_lib.create_train_state(config, 10, optax.identity())
    image = jnp.asarray(rng.normal(size=(4, 32, 32, 3)), jnp.float32)
    label = jnp.asarray(rng.integers(0, 10, 4), jnp.int32)
    members.append((state.params, state.batch_stats, dict(image=image, label=label)))
  return graphdef, members


def _members_program(graphdef, summed):
  loss = steps_lib.make_loss(graphdef)
  return jax.jit(functools.partial(steps_lib.members_value_and_grad, loss, (0, 0), summed=summed))


def _assert_members_equal(batched, each):
  for k, expected in enumerate(each):
    jax.tree.map(
      lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6),
      cohort.member(batched, k),
      expected,
    )


@pytest.mark.parametrize("conv", ["lax", "im2col"])
def test_a_cohorts_gradient_is_each_members_own(conv):
  """``vmap`` of ``steps.make_loss_and_grad`` gives each member the loss, logits,
  statistics and gradient it has alone, and so do both of ``members_value_and_grad``'s
  programs (the summed one is what a GPU runs); with shared parameters and a batch each,
  each batch's."""
  graphdef, members = _two_members(conv)
  loss_and_grad = steps_lib.make_loss_and_grad(graphdef)
  alone = [jax.jit(loss_and_grad)(*m) for m in members]
  stacked = cohort.stack(members)
  _assert_members_equal(jax.jit(jax.vmap(loss_and_grad))(*stacked), alone)
  for summed in (True, False):
    _assert_members_equal(_members_program(graphdef, summed)(*stacked), alone)
  params, stats, _ = members[0]
  shared = jax.jit(jax.vmap(loss_and_grad, in_axes=(None, None, 0)))(params, stats, stacked[2])
  _assert_members_equal(shared, [jax.jit(loss_and_grad)(params, stats, m[2]) for m in members])


def test_each_members_gradient_keeps_a_members_nan_its_own():
  """On a CPU a cohort takes each member's gradient: XLA:CPU's grouped backward-filter
  convolution (the summed gradient's) spreads one member's NaN to the others' kernels."""
  graphdef, members = _two_members("lax")
  stacked = cohort.stack(members)
  stacked[0]["fc"]["bias"] = stacked[0]["fc"]["bias"].at[0, 0].set(jnp.nan)  # member 0's
  finite = {}
  for summed in (True, False):
    (losses, _), grads = _members_program(graphdef, summed)(*stacked)
    assert np.isnan(losses[0]) and np.isfinite(losses[1])
    finite[summed] = all(np.isfinite(g[1]).all() for g in jax.tree.leaves(grads))
  assert finite == {False: True, True: False}


def test_a_cohort_shares_the_update_counters_not_a_parameter_named_count():
  """The counters (fields of the state's named tuples) are kept once; a user's parameter
  named ``count`` or ``step`` is a member's own, stacked like any parameter, and a
  training step ``vmap``-ped over the members' axes runs."""
  params = {"offset": {"count": jnp.zeros(3), "step": jnp.ones(3)}}
  tx = optax.chain(optax.sgd(0.1, momentum=0.9), optax.scale_by_schedule(lambda n: 1.0))
  members = [
    steps_lib.TrainState(
      jnp.zeros([], jnp.int32),
      jax.tree.map(lambda x, k=k: x + k, params),
      {},
      tx.init(params),
      jnp.full([], -1, jnp.int32),
    )  # fmt: skip
    for k in range(2)
  ]
  stacked = cohort.stack(members)
  assert stacked.step.shape == () and stacked.opt_state[1].count.shape == ()
  np.testing.assert_array_equal(stacked.params["offset"]["count"], [[0, 0, 0], [1, 1, 1]])
  assert stacked.bad_step.shape == (2,)

  def step(state, target):
    grads = jax.grad(lambda p: jnp.sum((p["offset"]["count"] - target) ** 2))(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    return state._replace(
      step=state.step + 1, params=optax.apply_updates(state.params, updates), opt_state=opt_state
    )

  axes = cohort.member_axes(stacked)
  stepped = jax.vmap(step, in_axes=(axes, 0), out_axes=axes)(stacked, jnp.asarray([1.0, 3.0]))
  for k, target in enumerate([1.0, 3.0]):
    want = step(members[k], target)
    jax.tree.map(np.testing.assert_allclose, cohort.member(stepped, k), want)
