"""The training program's GPU programs, compiled for an H100 or H200 without a GPU.

    python -m venv --system-site-packages .venv-cuda
    .venv-cuda/bin/pip install "jax[cuda12]==0.10.2"
    .venv-cuda/bin/python benchmarks/gpu_compile.py --out runs/gpu-compile

JAX compiles for a CUDA target on a machine with no GPU and no driver ("deviceless AOT"):
``JAX_PLATFORMS=cpu`` (set here before jax is imported, so the CUDA plugin never calls the
driver), a topology from a ``GpuTargetConfigProto`` (``benchmarks/gpu_targets/*.txtpb``: the
card's SM count, clocks, memory and bandwidth), inputs as ``ShapeDtypeStruct`` on a mesh of
that topology, ``jit(f).lower(...).compile()``. Per program this prints the kernels of the
optimised HLO by kind, the memory XLA plans (arguments, outputs, temporaries), flops and
bytes (XLA's cost analysis of the optimised module, with cuDNN convolutions, which it cannot
see, counted from their shapes) and the card's roofline time (flops over peak, bytes over
bandwidth, the larger). Beside the training program's chunk it compiles a minimal reference
step written here (same model, augmentation, weight decay, SGD momentum, nothing else).

A static model of the program, not a timing: cuDNN picks its algorithms at run time, and
launch overheads are unseen. ``--tiny`` compiles resnet8 at batch 8 for the H100 only (what
CI runs: a change that breaks the GPU program fails on a CPU machine).
"""

import os

os.environ["JAX_PLATFORMS"] = "cpu"  # before jax: no driver is asked for anything

import argparse  # noqa: E402
import collections  # noqa: E402
import itertools  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402
from jax.experimental import topologies  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import quickstart  # noqa: E402
from gradamp_jax import input_pipeline  # noqa: E402
from gradamp_jax.training import cohort, optimizer, steps  # noqa: E402

LOOP_STEPS = 50  # steps per call on a GPU (steps.steps_per_dispatch)
PROGRAMS = ("step", "loop")  # one step per call; the default loop, counted per step
TARGETS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gpu_targets")
# Dense peak flops (bf16 tensor cores; float32 without them) and memory bandwidth, per card.
CARDS = {
  "h100": dict(bf16=989e12, f32=67e12, bandwidth=3.35e12, memory=80e9),
  "h200": dict(bf16=989e12, f32=67e12, bandwidth=4.8e12, memory=141e9),
}
# name: (method, measure, track_directionality, optimizer, where, extra tracked measures[,
# action]); the action is amplify where not given.
VARIANTS = {
  "reference": None,
  "none, untracked": ("none", "G_prime", False, "sgd", "gradients", ()),
  "none, tracked": ("none", "G_prime", True, "sgd", "gradients", ()),
  "intelligent G′, tracked": ("intelligent", "G_prime", True, "sgd", "gradients", ()),
  "intelligent G, tracked": ("intelligent", "G", True, "sgd", "gradients", ()),
  "intelligent G′, tracked + GSNR": ("intelligent", "G_prime", True, "sgd", "gradients", ("GSNR",)),
  "intelligent G′, tracked, adamw, updates": (
    "intelligent",
    "G_prime",
    True,
    "adamw",
    "updates",
    (),
  ),
  "intelligent G′, tracked, freeze (updates)": (
    "intelligent",
    "G_prime",
    True,
    "sgd",
    "updates",
    (),
    "freeze",
  ),
  "intelligent G′, tracked, scale_by_zscore (updates)": (
    "intelligent",
    "G_prime",
    True,
    "sgd",
    "updates",
    (),
    "scale_by_zscore",
  ),
}


def config_for(model, dtype, batch, variant):
  config = quickstart.get_config()
  config.model, config.batch_size, config.conv = model, batch, "lax"
  config.half_precision = dtype == "bfloat16"
  method, measure, track, name, where, extra, *action = VARIANTS[variant]
  config.amplification.method, config.amplification.measure = method, measure
  config.amplification.action = action[0] if action else "amplify"
  config.track_directionality = track
  config.optimizer, config.amplification.where = name, where
  config.tracked_measures = tuple(config.tracked_measures) + tuple(extra)
  return config


def reference_step(config, loop, num_classes=10):
  """The minimal step: gather, crop, flip, normalise, cross-entropy, weight decay, SGD; with
  ``loop``, :data:`LOOP_STEPS` of them in a ``fori_loop``. Donates the state when it loops,
  as the training program does."""
  tx = optax.chain(
    optax.add_decayed_weights(config.weight_decay), optax.sgd(0.1, momentum=config.momentum)
  )
  graphdef, state = steps.create_train_state(config, num_classes, tx)

  def step(state, data, plan, index):
    batch = input_pipeline.train_batch(data, plan, index, (0.5,) * 3, (0.25,) * 3)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, state.batch_stats)
      logits = model(batch["image"], train=True)
      _, _, stats = nnx.split(model, nnx.Param, nnx.BatchStat)
      loss = optax.softmax_cross_entropy_with_integer_labels(
        logits.astype(jnp.float32), batch["label"]
      ).mean()
      return loss, stats.to_pure_dict()

    (loss, stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return state._replace(
      step=state.step + 1, params=params, batch_stats=stats, opt_state=opt_state
    ), loss

  if not loop:
    return step, state, (0,), ()  # what steps.chunk_donation donates of the state

  def steps_loop(state, data, plan, start, stop):
    return jax.lax.fori_loop(start, stop, lambda i, s: step(s, data, plan, i)[0], state)

  return steps_loop, state, (0, LOOP_STEPS), (0,)


def program_chunk(config, loop, num_classes=10, steps_per_epoch=100):
  """The training program's chunk (one step per call, or :data:`LOOP_STEPS` in its loop),
  donating what the training program donates (the history; the state when it loops)."""
  tx = optimizer.create_optimizer(config, steps_per_epoch)
  graphdef, state = steps.create_train_state(config, num_classes, tx)
  chunk = steps.make_train_chunk(graphdef, tx, (0.5,) * 3, (0.25,) * 3, loop=loop)
  history = {k: jnp.zeros(steps_per_epoch, jnp.float32) for k in steps.STEP_METRICS}
  return chunk, state, (0, LOOP_STEPS if loop else 1, history), steps.chunk_donation(loop)


def cohort_chunk(config, loop, members, num_classes=10, steps_per_epoch=100):
  """A cohort of ``members`` runs of the training program's chunk
  (:func:`gradamp_jax.training.cohort.make_cohort_chunk`), stacked states and histories."""
  tx = optimizer.create_optimizer(config, steps_per_epoch)
  graphdef, state = steps.create_train_state(config, num_classes, tx)
  states = jax.eval_shape(lambda s: cohort.stack([s] * members), state)
  chunk = cohort.make_cohort_chunk(
    config, steps_per_epoch, graphdef, (0.5,) * 3, (0.25,) * 3, loop=loop
  )
  history = {k: jnp.zeros((members, steps_per_epoch), jnp.float32) for k in steps.STEP_METRICS}
  rules = {k: np.repeat(v, members) for k, v in cohort.member_rules([config]).items()}
  extra = (0, LOOP_STEPS if loop else 1, history, rules)
  return chunk, states, extra, steps.chunk_donation(loop)


def target_sharding(card) -> NamedSharding:
  """A replicated sharding on one device of ``card``'s topology (no GPU needed)."""
  with open(os.path.join(TARGETS, f"{card}.txtpb")) as f:
    topology = topologies.get_topology_desc(
      platform="cuda", target_config=f.read(), topology="1x1x1"
    )
  return NamedSharding(topologies.make_mesh(topology, (1,), ("data",)), PartitionSpec())


def compile_for(card, fn, state, extra, donate, batch, num_examples, members=0):
  """``fn(state, data, plan, *extra)`` lowered and compiled for ``card``, donating the
  arguments ``donate`` (with ``members``, the plan is a cohort's: one per member); returns
  it and the CPU seconds that took: in all, and of them tracing and lowering to StableHLO
  (the rest is XLA's)."""
  sharding = target_sharding(card)

  def spec(x):
    shape, dtype = getattr(x, "shape", np.shape(x)), getattr(x, "dtype", None)
    return jax.ShapeDtypeStruct(shape, dtype or jnp.result_type(x), sharding=sharding)

  data = input_pipeline.DeviceSplit(
    jax.ShapeDtypeStruct((num_examples, 32, 32, 3), jnp.uint8, sharding=sharding),
    jax.ShapeDtypeStruct((num_examples,), jnp.int32, sharding=sharding),
  )

  def one_plan(seed):
    return input_pipeline.epoch_plan(seed, 1, num_examples=num_examples, batch_size=batch)

  seeds = jnp.arange(members)
  plan = jax.eval_shape(lambda: jax.vmap(one_plan)(seeds) if members else one_plan(0))
  args = (
    jax.tree.map(spec, state),
    data,
    jax.tree.map(spec, plan),
    *[jax.tree.map(spec, e) for e in extra],
  )
  start = time.process_time()  # CPU seconds of every thread: less sensitive to other load
  lowered = jax.jit(fn, donate_argnums=donate).lower(*args)
  lowering = time.process_time() - start
  compiled = lowered.compile()
  return compiled, (time.process_time() - start, lowering)


_SHAPE = re.compile(r"(bf16|f16|f32|s32|u32|s8|u8|pred|f64|s64)\[([\d,]*)\]")
_BYTES = dict(bf16=2, f16=2, f32=4, s32=4, u32=4, s8=1, u8=1, pred=1, f64=8, s64=8)


def _definitions(hlo_text):
  """Instruction name -> its (first) array shape, over every computation of the module."""
  shapes = {}
  for m in re.finditer(r"^\s*(?:ROOT )?%([\w.-]+) = \(?(\w+)\[([\d,]*)\]", hlo_text, re.M):
    shapes[m.group(1)] = (m.group(2), [int(d) for d in m.group(3).split(",") if d])
  return shapes


def _type_bytes(type_text):
  return sum(
    _BYTES[t] * int(np.prod([int(d) for d in dims.split(",") if d]))
    for t, dims in _SHAPE.findall(type_text)
  )


def _sizes(hlo_text):
  """Instruction name -> bytes of its whole result (every element of a tuple)."""
  pattern = r"^\s*(?:ROOT )?%([\w.-]+) = (.*?) [a-z][\w-]*\("
  return {m.group(1): _type_bytes(m.group(2)) for m in re.finditer(pattern, hlo_text, re.M)}


def _conv_cost(line, shapes):
  """Flops and bytes of one cuDNN convolution call, from its operands' and result's shapes.

  Every kind (forward, backward input, backward filter) does the forward convolution's
  work: 2 · (elements of the forward output) · (window) · (input features), its labels
  being the forward's (``lhs_rhs->out``).
  """
  name = re.match(r"\s*(?:ROOT )?%([\w.-]+) =", line).group(1)
  operands = re.search(r"custom-call\(([^)]*)\)", line).group(1)
  operands = [shapes.get(o.strip().lstrip("%")) for o in operands.split(",")]
  result = shapes[name]
  window = re.search(r"window=\{size=([\dx]+)", line)
  size = int(np.prod([int(k) for k in window.group(1).split("x")])) if window else 1
  _, rhs, _ = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line).groups()
  target = re.search(r'custom_call_target="([^"]+)"', line).group(1)
  if "BackwardFilter" in target:
    kernel, forward_out = result, operands[1]
  elif "BackwardInput" in target:
    kernel, forward_out = operands[1], operands[0]
  else:
    kernel, forward_out = operands[1], result
  flops = 2 * int(np.prod(forward_out[1])) * size * kernel[1][rhs.index("i")]
  nbytes = sum(_BYTES[t] * int(np.prod(d)) for t, d in [result, *operands] if t in _BYTES)
  return flops, nbytes


def _computation(hlo_text, loop):
  """The entry computation's text, or with ``loop`` the body of its (one) while loop."""
  start = hlo_text.index("ENTRY")
  if loop:
    body = re.search(r" while\(.*?body=%([\w.-]+)", hlo_text[start:]).group(1)
    start = hlo_text.index(f"%{body} ")
  text = hlo_text[start:]
  return text[: text.index("\n}\n")]


def kernels_and_convs(hlo_text, loop=False):
  """Kernels by kind of the entry computation (with ``loop``, of the loop's body: one step),
  the cuDNN convolutions' flops and bytes, the elements of the largest copy, and the bytes
  the kernels read and write (every operand and result once, a conditional's included)."""
  shapes, sizes = _definitions(hlo_text), _sizes(hlo_text)
  kinds, flops, nbytes, largest_copy = collections.Counter(), 0, 0, 0
  kernel_bytes = 0
  for line in _computation(hlo_text, loop).splitlines()[1:]:
    m = re.search(r"%([\w.-]+) = .*?\s([a-z][\w-]*)\(([^)]*)\)", line)  # op after the type
    if not m:
      continue
    name, op, operands = m.groups()
    if op in ("parameter", "constant", "get-tuple-element", "tuple", "bitcast"):
      continue
    kernel_bytes += sizes.get(name, 0) + sum(
      sizes.get(o.strip().lstrip("%"), 0) for o in operands.split(",")
    )
    if op == "custom-call":
      target = re.search(r'custom_call_target="([^"]+)"', line).group(1)
      if "conv" in target.lower():
        kinds["convolution"] += 1
        conv_flops, conv_bytes = _conv_cost(line, shapes)
        flops, nbytes = flops + conv_flops, nbytes + conv_bytes
      elif "gemm" in target.lower() or "matmul" in target.lower():
        kinds["gemm"] += 1
      else:
        kinds[f"custom-call {target}"] += 1
    elif op in ("fusion", "copy", "conditional", "while", "all-reduce"):
      kinds[{"while": "loop"}.get(op, op)] += 1
      if op == "copy":
        dims = _SHAPE.search(line.split("=", 1)[1]).group(2)
        largest_copy = max(largest_copy, int(np.prod([int(d) for d in dims.split(",") if d])))
    else:
      kinds["other"] += 1
  return kinds, flops, nbytes, largest_copy, kernel_bytes


def measure(compiled, card, dtype, loop):
  """Kernels, memory, flops, bytes and roofline; for a loop, of one pass of its body (XLA's
  cost analysis counts a while loop's body once: its trip count is traced)."""
  text = compiled.as_text()
  kinds, conv_flops, conv_bytes, largest_copy, kernel_bytes = kernels_and_convs(text, loop)
  flops, nbytes = conv_flops, conv_bytes
  try:  # XLA's generic cost analysis of the optimised module, through the CPU client
    from jax._src.lib import _jax

    module = compiled._executable.xla_extension_executable().hlo_modules()[0]
    cost = _jax.hlo_module_cost_analysis(jax.devices("cpu")[0].client, module)
    flops += max(float(cost.get("flops", 0)), 0)
    nbytes += max(float(cost.get("bytes accessed", 0)), 0)
  except Exception as e:  # a private API: say so rather than guess
    print(f"  (cost analysis unavailable: {type(e).__name__}: {e})", file=sys.stderr)
  memory = compiled.memory_analysis()
  peak = CARDS[card]["bf16" if dtype == "bfloat16" else "f32"]
  roofline = max(flops / peak, nbytes / CARDS[card]["bandwidth"])
  return dict(
    kernels=sum(kinds.values()),
    kinds=dict(kinds),
    largest_copy_elements=largest_copy,
    kernel_io_bytes=kernel_bytes,
    backward_filter_convs=_computation(text, loop).count('"__cudnn$convBackwardFilter"'),
    temp_bytes=memory.temp_size_in_bytes,
    argument_bytes=memory.argument_size_in_bytes,
    output_bytes=memory.output_size_in_bytes,
    flops=flops,
    bytes=nbytes,
    roofline_seconds=roofline,
  )


COHORT_VARIANT = "intelligent G′, tracked"  # what --cohorts compiles as cohorts of K runs


def compile_rows(
  cards, fn, state, extra, donate, setting, members=0, num_examples=None
) -> list[dict]:
  """One row per card of ``fn`` compiled for it (``setting``: model, dtype, batch,
  variant, loop; ``members``: a cohort's size, 0 for a run alone; the training images
  ``num_examples``, 4 batches by default), printed as it comes."""
  model, dtype, batch, variant, loop = setting
  rows = []
  for card in cards:
    compiled, (seconds, lowering) = compile_for(
      card, fn, state, extra, donate, batch, num_examples or 4 * batch, members=members
    )
    row = dict(
      model=model,
      dtype=dtype,
      batch=batch,
      variant=variant,
      program="loop" if loop else "step",
      card=card,
      cohort=members,
      compile_cpu_seconds=round(seconds, 1),
      lower_cpu_seconds=round(lowering, 1),
      **measure(compiled, card, dtype, loop),
    )
    rows.append(row)
    print(
      f"{card} {model} {dtype} b{batch} {variant} ({row['program']}"
      f"{f', cohort of {members}' if members else ''}): {row['kernels']} kernels "
      f"{row['kinds']}, {row['bytes'] / 1e9:.3f} GB, {row['flops'] / 1e12:.3f} TFLOP, temp "
      f"{row['temp_bytes'] / 2**20:.0f} MiB, compiled in {seconds:.1f} CPU s "
      f"({lowering:.1f} tracing and lowering)",
      flush=True,
    )
  return rows


PAPER_MODELS = ("vgg19", "resnet18", "resnet34", "resnet50", "resnet101")
CIFAR_TRAIN, CIFAR_TEST, EVAL_BATCH = 50_000, 10_000, 500


def grid_rows(cards) -> list[dict]:
  """``--grid``: every paper model (bfloat16; resnet18 also float32) x CIFAR-10/100 at
  batch 128 on the whole training set: the tracked intelligent G′ loop per card, the
  evaluation and the epoch plan (on the first card: they are small), and cohorts of 1 and
  2 on CIFAR-10 (the first card: a run's memory is the card's business only through its
  capacity) for the largest K. A program that fails to compile raises."""
  rows = []
  settings = [(m, "bfloat16") for m in PAPER_MODELS] + [("resnet18", "float32")]
  for model, dtype in settings:
    for num_classes in (10, 100):
      config = config_for(model, dtype, 128, COHORT_VARIANT)
      name = f"{COHORT_VARIANT}, CIFAR-{num_classes}"
      fn, state, extra, donate = program_chunk(config, True, num_classes, CIFAR_TRAIN // 128)
      setting = (model, dtype, 128, name, True)
      rows += compile_rows(cards, fn, state, extra, donate, setting, 0, CIFAR_TRAIN)
      rows.append(side_programs(cards[0], config, num_classes, state, setting))
      if num_classes == 10:
        for members in (1, 2):
          fn, states, extra, donate = cohort_chunk(config, True, members, 10, CIFAR_TRAIN // 128)
          rows += compile_rows(cards[:1], fn, states, extra, donate, setting, members, CIFAR_TRAIN)
  return rows


def side_programs(card, config, num_classes, state, setting) -> dict:
  """The evaluation over the test set and the epoch plan, compiled for ``card``: their
  planned memory (a row with ``program="evaluate+plan"``)."""
  sharding = target_sharding(card)
  spec = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype, sharding=sharding)  # noqa: E731
  tx = optimizer.create_optimizer(config, CIFAR_TRAIN // 128)
  graphdef, _ = steps.create_train_state(config, num_classes, tx)
  evaluate = steps.make_evaluate(graphdef, (0.5,) * 3, (0.25,) * 3)
  batches = CIFAR_TEST // EVAL_BATCH
  split = input_pipeline.EvalSplit(
    spec((batches, EVAL_BATCH, 32, 32, 3), jnp.uint8),
    spec((batches, EVAL_BATCH), jnp.int32),
    spec((batches, EVAL_BATCH), jnp.float32),
  )
  states = jax.tree.map(lambda x: spec(np.shape(x), jnp.result_type(x)), state)
  start = time.process_time()
  compiled_eval = jax.jit(evaluate).lower(states, split).compile()
  plan = lambda seed, epoch: input_pipeline.epoch_plan(  # noqa: E731
    seed, epoch, num_examples=CIFAR_TRAIN, batch_size=128
  )
  compiled_plan = jax.jit(plan).lower(spec((), jnp.int32), spec((), jnp.int32)).compile()
  seconds = time.process_time() - start
  model, dtype, batch, variant, _ = setting
  memory = [c.memory_analysis() for c in (compiled_eval, compiled_plan)]
  row = dict(model=model, dtype=dtype, batch=batch, variant=variant, program="evaluate+plan")
  return row | dict(
    card=card,
    cohort=0,
    compile_cpu_seconds=round(seconds, 1),
    planned_bytes=[
      m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes for m in memory
    ],
  )


# The paper's grid per seed (configs/paper.py): runs, and the epoch after which the first
# selection lets runs differ (what a branched sweep trains once).
PAPER_RUNS = {"params_1": (155, 51), "params_2": (75, 11)}
EPOCHS = 150


def grid_markdown(rows) -> str:
  """``--grid``: each program compiled (kernels, bytes, memory, roofline), the largest
  cohort per model and card, and the roofline GPU-hours of a family."""
  lines = [
    "| model | dtype | data | card | kernels per step | GB per step | temp MiB | roofline "
    "ms per step | roofline images/s | evaluation + plan MiB | compile CPU s |",
    "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
  ]
  side = {(r["model"], r["dtype"], r["variant"]): r for r in rows if r["program"] != "loop"}
  runs = [r for r in rows if r["program"] == "loop" and not r.get("cohort")]
  for r in runs:
    extra = side.get((r["model"], r["dtype"], r["variant"]))
    planned = (
      "" if extra is None else " + ".join(f"{b / 2**20:,.0f}" for b in extra["planned_bytes"])
    )
    lines.append(
      f"| {r['model']} | {r['dtype']} | {r['variant'].rsplit(', ', 1)[1]} | {r['card']} | "
      f"{r['kernels']} | {r['bytes'] / 1e9:.2f} | {r['temp_bytes'] / 2**20:,.0f} | "
      f"{1e3 * r['roofline_seconds']:.2f} | {r['batch'] / r['roofline_seconds']:,.0f} | "
      f"{planned} | {r['compile_cpu_seconds']} |"
    )
  lines += [
    "",
    "| model | dtype | largest cohort: " + " | ".join(CARDS) + " |",
    "|---|---|" + "---|" * len(CARDS),
  ]
  for model, dtype in dict.fromkeys((r["model"], r["dtype"]) for r in rows if r.get("cohort")):
    mine = [r for r in rows if r.get("cohort") and (r["model"], r["dtype"]) == (model, dtype)]
    lines.append(
      f"| {model} | {dtype} | " + " | ".join(largest_cohort(c, mine) for c in CARDS) + " |"
    )
  cohorts = [r for r in rows if r.get("cohort") and r["program"] == "loop"]
  return "\n".join(lines + ["", cost_markdown(runs, cohorts)]) + "\n"


def cost_markdown(runs, cohorts=()) -> str:
  """Per model, data and card: the paper's grid per seed, its epochs plain and branched (at
  most: every run on its own after the first selection) and the roofline GPU-hours of its
  training steps (evaluation left out); with ``cohorts`` (rows of compiled cohorts), the
  branched epochs again at the roofline per run of the largest cohort compiled on that
  card. A roofline bound, not a measurement."""
  from configs import paper

  lines = [
    "| model | data | runs per seed | epochs: plain / branched (at most) | card | roofline "
    "GPU-hours per seed: plain / branched / branched in cohorts |",
    "|---|---|---:|---:|---|---:|",
  ]
  per_run = {}  # (model, dtype, card) -> roofline seconds per run of the largest cohort
  for c in sorted(cohorts, key=lambda c: c["cohort"]):
    per_run[c["model"], c["dtype"], c["card"]] = (c["roofline_seconds"] / c["cohort"], c)
  for r in (r for r in runs if r["dtype"] == "bfloat16"):
    family = "params_1" if paper.STRATEGY[r["model"]] == paper.default.PARAMS_1 else "params_2"
    count, shared = PAPER_RUNS[family]
    plain, branched = count * EPOCHS, shared + count * (EPOCHS - shared)
    steps_hours = (CIFAR_TRAIN // r["batch"]) / 3600
    hours = r["roofline_seconds"] * steps_hours
    seconds, cohort_row = per_run.get((r["model"], r["dtype"], r["card"]), (None, None))
    in_cohorts = (
      "—"
      if seconds is None
      else f"{branched * seconds * steps_hours:,.1f} (K = {cohort_row['cohort']})"
    )
    lines.append(
      f"| {r['model']} | {r['variant'].rsplit(', ', 1)[1]} | {count} | {plain:,} / {branched:,} "
      f"| {r['card']} | {plain * hours:,.1f} / {branched * hours:,.1f} / {in_cohorts} |"
    )
  return "\n".join(lines)


def parse_args():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--tiny", action="store_true", help="resnet8, batch 8, H100 only (CI)")
  parser.add_argument("--out", default=None, help="folder for results.json and results.md")
  parser.add_argument("--cards", default="h100,h200", help="comma-separated targets")
  parser.add_argument(
    "--check",
    action="store_true",
    help="fail if a program has more than one conditional or copies an array larger than a "
    "per-layer vector (what CI asserts)",
  )
  parser.add_argument(
    "--programs", default=",".join(PROGRAMS), help="comma-separated: step (one per call), loop"
  )
  parser.add_argument(
    "--variants", default=";".join(VARIANTS), help="semicolon-separated names of VARIANTS"
  )
  parser.add_argument(
    "--grid",
    action="store_true",
    help="every paper model x CIFAR-10/100: loop, evaluation, epoch plan, cohorts, costs",
  )
  parser.add_argument(
    "--cohorts",
    default="",
    help=f"comma-separated cohort sizes K: also compile the {COHORT_VARIANT} loop as one "
    "program for K runs (gradamp_jax.training.cohort)",
  )
  args = parser.parse_args()
  for name, given, known in [
    ("cards", args.cards.split(","), CARDS),
    ("programs", args.programs.split(","), PROGRAMS),
    ("variants", args.variants.split(";"), VARIANTS),
  ]:
    unknown = [c for c in given if c not in known]
    if unknown:
      parser.error(f"--{name}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
  return args


def main():
  args = parse_args()
  cards, programs = args.cards.split(","), args.programs.split(",")
  variants = args.variants.split(";")
  if args.tiny:
    settings, cards = [("resnet8", "float32", 8)], ["h100"]
  else:
    settings = [("resnet18", "bfloat16", 128)]
  sizes = [int(k) for k in args.cohorts.split(",") if k]
  if args.grid:
    rows = grid_rows(cards)
    write_results(args.out, rows, grid_markdown(rows))
    return
  rows = []
  for model, dtype, batch in settings:
    for variant, loop in itertools.product(variants, [p == "loop" for p in programs]):
      config = config_for(
        model, dtype, batch, variant if variant != "reference" else "none, untracked"
      )
      fn, state, extra, donate = (
        reference_step(config, loop) if variant == "reference" else program_chunk(config, loop)
      )
      rows += compile_rows(cards, fn, state, extra, donate, (model, dtype, batch, variant, loop))
    for members in sizes:
      config = config_for(model, dtype, batch, COHORT_VARIANT)
      fn, state, extra, donate = cohort_chunk(config, True, members)
      setting = (model, dtype, batch, COHORT_VARIANT, True)
      rows += compile_rows(cards, fn, state, extra, donate, setting, members)
  problems = check(rows) if args.check else []
  write_results(args.out, rows, markdown(rows))
  for problem in problems:
    print(f"check failed: {problem}", file=sys.stderr)
  if problems:
    sys.exit(1)


def write_results(out, rows, text) -> None:
  """Prints ``text``; with ``out``, writes ``results.json`` and ``results.md`` into it."""
  print(text)
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
      json.dump(rows, f, indent=2)
    with open(os.path.join(out, "results.md"), "w") as f:
      f.write(text)


MAX_SMALL_COPY = 4096  # elements: per-layer vectors and scalars, never a parameter's array


def check(rows):
  """What the tuned step guarantees: at most one conditional (the epoch-end measures) and no
  copy of a parameter-sized array (the accumulators are updated in place). A cohort keeps
  its conditional (the shared update counters: ``cohort.COUNTERS``), takes its kernel
  gradients with cuDNN's backward-filter convolutions and copies no more than its members'
  per-layer vectors (``steps.members_value_and_grad``)."""
  problems = []
  for r in rows:
    cohort_size = r.get("cohort", 0)
    name = f"{r['card']} {r['model']} {r['variant']} ({r['program']}"
    name += f", cohort of {cohort_size})" if cohort_size else ")"
    conditionals = r["kinds"].get("conditional", 0)
    if conditionals > 1 or (cohort_size and conditionals != 1):
      problems.append(
        f"{name}: {conditionals} conditionals, {'' if cohort_size else 'at most '}1 expected"
      )
    if cohort_size and not r.get("backward_filter_convs"):
      problems.append(f"{name}: no cuDNN backward-filter convolution (kernel gradients regrouped)")
    limit = MAX_SMALL_COPY * max(cohort_size, 1)
    if r["largest_copy_elements"] > limit:
      problems.append(
        f"{name}: copies an array of {r['largest_copy_elements']:,} elements "
        f"(at most {limit:,} expected)"
      )
  return problems


def markdown(rows):
  """The runs' table (against the reference step where it was compiled) and, with
  cohorts, the cohorts' table."""
  lines = [
    "| card | program | kernels (fusions, convs, copies, cond.) | GB per step | kernel I/O GB | "
    "temp MiB | roofline images/s | vs reference (kernels, bytes, kernel I/O) | "
    "compile CPU s (of it tracing and lowering) |",
    "|---|---|---|---:|---:|---:|---:|---|---:|",
  ]
  reference = {
    (r["card"], r["model"], r["dtype"], r["batch"], r["program"]): r
    for r in rows
    if r["variant"] == "reference"
  }
  for r in (r for r in rows if not r.get("cohort")):
    ref = reference.get((r["card"], r["model"], r["dtype"], r["batch"], r["program"]))
    k = r["kinds"]
    versus = (
      f"{r['kernels'] / ref['kernels']:.2f}x, {r['bytes'] / ref['bytes']:.2f}x, "
      f"{r['kernel_io_bytes'] / ref['kernel_io_bytes']:.2f}x"
      if ref
      else ""
    )
    lines.append(
      f"| {r['card']} | {r['model']} {r['dtype']} b{r['batch']}, {r['variant']}, {r['program']} "
      f"| {r['kernels']} "
      f"({k.get('fusion', 0)}, {k.get('convolution', 0)}, {k.get('copy', 0)}, "
      f"{k.get('conditional', 0)}) | {r['bytes'] / 1e9:.2f} | {r['kernel_io_bytes'] / 1e9:.2f} | "
      f"{r['temp_bytes'] / 2**20:.0f} | {r['batch'] / r['roofline_seconds']:,.0f} | "
      f"{versus} | {r['compile_cpu_seconds']} ({r['lower_cpu_seconds']}) |"
    )
  cohorts = [r for r in rows if r.get("cohort")]
  return "\n".join(lines) + "\n" + (cohort_markdown(cohorts) if cohorts else "")


def cohort_markdown(rows):
  """Per card and cohort size K: kernels per step, kernel I/O and memory per run, roofline
  images/s per run and in all, against K = 1 (the smallest K compiled); then the largest K
  that fits each card."""
  lines = [
    "",
    "| card | K | kernels per step (vs K=1) | kernel I/O per run GB (vs K=1) | temp MiB | "
    "memory per run MiB | roofline images/s per run | in all | compile CPU s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  ]
  for card in dict.fromkeys(r["card"] for r in rows):
    mine = sorted((r for r in rows if r["card"] == card), key=lambda r: r["cohort"])
    one = mine[0]
    for r in mine:
      k, io = r["cohort"], r["kernel_io_bytes"] / r["cohort"]
      per_run = r["batch"] / r["roofline_seconds"]
      lines.append(
        f"| {card} | {k} | {r['kernels']} ({r['kernels'] / one['kernels']:.2f}x) | "
        f"{io / 1e9:.3f} ({io / (one['kernel_io_bytes'] / one['cohort']):.2f}x) | "
        f"{r['temp_bytes'] / 2**20:,.0f} | {member_bytes(r) / k / 2**20:,.0f} | {per_run:,.0f} | "
        f"{per_run * k:,.0f} | {r['compile_cpu_seconds']} |"
      )
  for card in dict.fromkeys(r["card"] for r in rows):
    lines.append("")
    lines.append(f"{card}: {largest_cohort(card, [r for r in rows if r['card'] == card])}")
  return "\n".join(lines) + "\n"


def member_bytes(row) -> int:
  """The device memory a compiled program plans: its arguments, outputs and temporaries."""
  return row["argument_bytes"] + row["output_bytes"] + row["temp_bytes"]


def largest_cohort(card, rows) -> str:
  """The largest K whose program fits in :data:`~gradamp_jax.training.cohort.MEMORY_MARGIN`
  of the card (:func:`~gradamp_jax.training.cohort.largest_fitting`, through the planned
  memory of the two largest cohorts compiled), with its reason."""
  if len(rows) < 2:
    return "one cohort size compiled: no largest K estimated"
  planned = {r["cohort"]: member_bytes(r) for r in rows}
  largest, slope, fixed = cohort.largest_fitting(planned, CARDS[card]["memory"])
  a, b = sorted(planned)[-2:]
  return (
    f"largest K that fits: {largest} ({slope / 2**20:,.0f} MiB per run and {fixed / 2**20:,.0f} "
    f"MiB shared, planned by XLA for K = {a} and {b}, within "
    f"{cohort.MEMORY_MARGIN:.0%} of {CARDS[card]['memory'] / 1e9:.0f} GB)"
  )


if __name__ == "__main__":
  main()
