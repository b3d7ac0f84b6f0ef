"""Numbers in the README and docs against the files they come from."""

import csv
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Row labels of the results tables -> (method, measure, case) of comparison.csv.
LABELS = {
  "none": ("none", "", ""),
  "all layers": ("all", "", ""),
  "random": ("random", "", ""),
  "intelligent G,": ("intelligent", "G", None),
  "intelligent G′,": ("intelligent", "G_prime", None),
  "matched random (G,": ("matched_random", "G", None),
  "matched random (G′,": ("matched_random", "G_prime", None),
}


def read(path):
  with open(os.path.join(ROOT, path)) as f:
    return f.read()


def comparison(path):
  with open(os.path.join(ROOT, path)) as f:
    return list(csv.DictReader(f))


def key_of(label: str):
  for prefix, (method, measure, case) in sorted(LABELS.items(), key=lambda kv: -len(kv[0])):
    if label.startswith(prefix):
      if case is None:
        case = re.search(r"case (\d)", label).group(1)
      return method, measure, case
  raise AssertionError(f"unknown row label {label!r}")


def table_rows(markdown: str, header: str):
  """The rows of the first Markdown table whose header line starts with ``header``."""
  lines = markdown.splitlines()
  start = next(i for i, line in enumerate(lines) if line.startswith(header))
  rows = []
  for line in lines[start + 2 :]:
    if not line.startswith("|"):
      break
    rows.append([cell.strip() for cell in line.strip("|").split("|")])
  return rows


def numbers(cell: str) -> list[float]:
  return [float(x.replace("−", "-")) for x in re.findall(r"[+−-]?\d+\.\d+", cell)]


def check_row(row, label: str, cells: dict[str, str]):
  mean_std = numbers(cells["accuracy"])
  assert mean_std == pytest.approx([float(row["test_mean"]), float(row["test_std"])], abs=0.006), (
    label
  )
  if cells.get("diff"):
    diff = numbers(cells["diff"])
    expected = [float(row[k]) for k in ("diff_mean", "diff_ci_low", "diff_ci_high")]
    assert diff == pytest.approx(expected, abs=0.006), label
  if cells.get("best") and row["paper_best"]:
    assert numbers(cells["best"]) == pytest.approx([float(row["paper_best"])], abs=0.006)


def find(rows, key):
  method, measure, case = key
  found = [r for r in rows if (r["method"], r["measure"], r["case"]) == (method, measure, case)]
  assert len(found) == 1, key
  return found[0]


def test_readme_results_table_matches_the_study():
  rows = comparison("docs/replication/comparison.csv")
  table = table_rows(read("README.md"), "| method | test %")
  assert len(table) == len(rows)
  for label, accuracy, diff, best in table:
    check_row(find(rows, key_of(label)), label, dict(accuracy=accuracy, diff=diff, best=best))


def test_replication_document_table_matches_the_study():
  rows = comparison("docs/replication/comparison.csv")
  table = table_rows(read("docs/replication.md"), "| method |")
  assert len(table) == len(rows)
  for label, _, accuracy, diff, best in table:
    check_row(find(rows, key_of(label)), label, dict(accuracy=accuracy, diff=diff, best=best))


def test_the_table_check_catches_a_wrong_number():
  rows = comparison("docs/replication/comparison.csv")
  with pytest.raises(AssertionError):
    check_row(find(rows, ("none", "", "")), "none", dict(accuracy="51.44 ± 0.90"))


def test_docs_cite_only_what_ships():
  for path in (
    "README.md",
    "BENCHMARKS.md",
    *(os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")),
  ):
    text = read(path)
    assert "SPEC" not in text, path
    for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
      if "://" not in link:
        target = os.path.normpath(os.path.join(ROOT, os.path.dirname(path), link))
        assert os.path.exists(target), f"{path} links to missing {link}"


# The README's API table against the package's signatures.

API_ENTRY = re.compile(r"`(ga\.[\w.]+)(\(([^`]*)\))?`")


def split_params(text: str) -> list[str]:
  """``a, b=(1, 2), *, c`` -> ``["a", "b=(1, 2)", "*", "c"]``: commas inside brackets kept."""
  parts, depth, current = [], 0, ""
  for char in text:
    if char == "," and depth == 0:
      parts.append(current.strip())
      current = ""
      continue
    depth += char in "([{"
    depth -= char in ")]}"
    current += char
  if current.strip():
    parts.append(current.strip())
  return parts


def api_entries(readme: str):
  """(name, parameters or None) of every ``ga.…`` in the first column of the API table."""
  for row in table_rows(readme, "| API |"):
    for match in API_ENTRY.finditer(row[0]):
      yield match.group(1), None if match.group(2) is None else split_params(match.group(3))


def resolve(name: str):
  import gradamp_jax

  obj = gradamp_jax
  for attr in name.split(".")[1:]:
    assert hasattr(obj, attr), f"README's API table names {name}, which does not exist"
    obj = getattr(obj, attr)
  return obj


def check_signature(name: str, listed: list[str]):
  """The listed parameters are the signature's, in order, with its defaults where listed."""
  import ast
  import inspect

  params = list(inspect.signature(resolve(name)).parameters.values())
  names = [p.split("=")[0].strip() for p in listed if p != "*"]
  assert names == [p.name for p in params], f"{name}: README lists {names}"
  star = listed.index("*") if "*" in listed else len(listed)
  keyword_only = [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
  assert names[star:] == keyword_only, f"{name}: keyword-only {keyword_only}"
  for entry in listed:
    if "=" in entry:
      key, value = (part.strip() for part in entry.split("=", 1))
      default = next(p.default for p in params if p.name == key)
      assert ast.literal_eval(value) == default, f"{name}: {key}={default!r}, README {value}"


def test_readme_api_table_matches_the_signatures():
  entries = list(api_entries(read("README.md")))
  assert len(entries) >= 20
  for name, listed in entries:
    obj = resolve(name)
    if listed is not None:
      assert callable(obj), name
      check_signature(name, listed)


def test_the_api_check_catches_a_wrong_signature():
  with pytest.raises(AssertionError):
    check_signature("ga.amplify", split_params('optimizer, amplification, *, where="updates"'))
  with pytest.raises(AssertionError):
    check_signature("ga.amplify", split_params("optimizer, amplification, where"))
  with pytest.raises(AssertionError):
    check_signature("ga.steps_per_epoch", split_params("num_examples"))


# The README's figures against the documents they summarise.


def section(markdown: str, heading: str) -> str:
  """The text under ``heading`` up to the next heading of its level or higher."""
  level = heading.split(" ")[0]
  start = markdown.index(heading + "\n")
  ends = [m.start() for m in re.finditer(r"^#{1,%d} " % len(level), markdown, re.M)]
  return markdown[start : next((e for e in ends if e > start), len(markdown))]


def flat(text: str) -> str:
  return " ".join(text.split())


def test_readme_test_times_match_docs_testing():
  rows = {row[0]: row for row in table_rows(read("docs/testing.md"), "| what | budget |")}
  tests = flat(section(read("README.md"), "## Tests"))
  for what, comment in (("fast tier", 'pytest -m "not slow"'), ("full suite", "pytest ")):
    _, budget, latest, count, _, date, _ = rows[what]
    seconds = re.match(r"(\d+) s", latest).group(1)
    assert f"{seconds} s ({count} tests" in tests, what
    assert date in tests, what
    line = next(x for x in read("README.md").splitlines() if x.startswith(comment + " "))
    assert line.endswith(f": {seconds} s"), line
  minutes = re.match(r"≤ (\d+) min", rows["full suite"][1]).group(1)
  assert f"{minutes}-minute budget" in tests


def test_readme_quickstart_matches_benchmarks():
  rows = table_rows(read("BENCHMARKS.md"), "| machine (date), convolution |")
  readme = flat(section(read("README.md"), "## Quickstart"))
  every = []
  for row in (row for row in rows if row[1] == "0, 1, 2"):
    seconds = [int(s) for s in re.findall(r"(\d+) s", row[2])]
    accuracies = numbers(row[4])
    every += accuracies
    quoted = ", ".join(f"{a:.2f}" for a in accuracies) + f" % in {min(seconds)}–{max(seconds)} s"
    assert quoted in readme, row[0]
    assert re.search(r"\d{4}-\d\d-\d\d", row[0]).group(0) in readme, row[0]
  assert len(every) == 6
  assert f"**{min(every):.1f}–{max(every):.1f} %**" in readme


def test_readme_gpu_figures_match_benchmarks():
  benchmarks = read("BENCHMARKS.md")
  readme = flat(read("README.md"))
  costs = {
    row[0]: row[3].split(" / ") for row in table_rows(benchmarks, "| model | runs per seed |")
  }
  quoted = re.search(
    r"([\d.]+) H100-hours per seed for ResNet-18 on CIFAR-10, ([\d.]+) branched in cohorts of 2; "
    r"([\d.]+) and ([\d.]+) for ResNet-101",
    readme,
  )
  assert quoted, "the README's quote of a family's cost"
  assert list(quoted.groups()) == [*costs["resnet18"][::2], *costs["resnet101"][::2]]
  loop = next(
    row
    for row in table_rows(benchmarks, "| program | kernels")
    if row[0].startswith("intelligent G′") and row[0].endswith("loop")
  )
  kernels, _, kernel_io = loop[6].split(", ")
  assert f"has {kernels} the reference's kernels and moves {kernel_io} its bytes" in readme


# "a ± b" and "d [low, high]" as the studies' documents write them.
QUOTE = re.compile(r"[+−]?\d+\.\d+ ± \d+\.\d+|[+−]?\d+\.\d+ \[[+−]?\d+\.\d+, [+−]?\d+\.\d+\]")


def test_readme_quotes_of_the_studies_match_their_documents():
  results = section(read("README.md"), "## Results")
  sources = {
    "**Headline": "docs/replication.md",
    "**Under AdamW**": "docs/adamw.md",
    "**Other actions": "docs/actions.md",
    "**Where the claim could hold": "docs/depth.md",
  }
  for prefix, path in sources.items():
    paragraph = flat(next(p for p in results.split("\n\n") if p.startswith(prefix)))
    source = flat(read(path))
    quotes = QUOTE.findall(paragraph)
    assert quotes, prefix
    for quote in quotes:
      assert quote in source, f"README quotes {quote!r}, not in {path}"


def slug(heading: str) -> str:
  """GitHub's anchor of a heading."""
  text = heading.strip().lower()
  return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def test_links_to_sections_resolve():
  docs = [os.path.join("docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))]
  for path in ("README.md", "BENCHMARKS.md", *(d for d in docs if d.endswith(".md"))):
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", read(path)):
      if "://" in target:
        continue
      linked = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
      headings = re.findall(r"^#+ (.+)$", read(linked), re.M)
      assert anchor in {slug(h) for h in headings}, f"{path} links to {linked}#{anchor}"


# The README's Python code, run as a user copies it, after a setup of what it leaves to the
# reader: a tiny MLP (three layers) on 256 random examples, two full batches of 128 per epoch.
README_SETUP = """
import jax
import jax.numpy as jnp
import numpy as np
import optax

num_examples = 256
_rng = np.random.default_rng(0)
_images = jnp.asarray(_rng.normal(size=(num_examples, 8)), jnp.float32)
_labels = jnp.asarray(_rng.integers(0, 3, num_examples), jnp.int32)
params = {
  f"dense{i}": {
    "kernel": jnp.asarray(_rng.normal(size=(m, n)) / np.sqrt(m), jnp.float32),
    "bias": jnp.zeros(n, jnp.float32),
  }
  for i, (m, n) in enumerate([(8, 16), (16, 16), (16, 3)])
}


def loss_fn(params, batch):
  x, y = batch
  for i in range(3):
    x = x @ params[f"dense{i}"]["kernel"] + params[f"dense{i}"]["bias"]
    x = jax.nn.relu(x) if i < 2 else x
  return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()


def train_batches(epoch):
  order = np.random.default_rng(epoch).permutation(num_examples)
  for start in range(0, num_examples - 127, 128):
    yield _images[order[start : start + 128]], _labels[order[start : start + 128]]
"""


def python_blocks(markdown: str) -> list[str]:
  return re.findall(r"^```python\n(.*?)^```", markdown, re.M | re.S)


def test_readme_code_runs_as_written_on_a_tiny_model():
  import gradamp_jax as ga
  from configs import default

  blocks = python_blocks(read("README.md"))
  assert len(blocks) == 2
  space = {}
  for name, code in [
    ("setup", README_SETUP),
    *((f"README block {k}", b) for k, b in enumerate(blocks)),
  ]:
    exec(compile(code, name, "exec"), space)
  spe, sgd_phases = space["steps_per_epoch"], space["phases"]
  assert spe == 2
  ga.check_epoch_start(space["opt_state"], 151, spe)  # the loop made every update of params_1
  assert [r["layer"] for r in ga.selection_report(space["opt_state"], space["params"])] == [
    "dense0",
    "dense1",
    "dense2",
  ]
  # The second block's phases: params_1 at the AdamW study's rates (configs/default.py).
  scale = default.STUDIED_OPTIMIZERS["adamw"]["lr_scale"]
  starts = [0] + [end for end, *_ in sgd_phases[:-1]]
  for start, (_, lr, _, _) in zip(starts, sgd_phases):
    assert float(space["schedule"](start * spe)) == pytest.approx(lr * scale)
  assert [p[::2] for p in space["adam_phases"]] == [p[::2] for p in sgd_phases]


@pytest.fixture(scope="module")
def depth_runs():
  """results/depth-study's run folders, read once for the tests of docs/depth.md."""
  from gradamp_jax import analysis

  return analysis.load_runs(os.path.join(ROOT, "results", "depth-study"))


def depth_arm(runs, label: str):
  """The finished runs of the depth study's arm that a results-table row names."""
  if label in ("none", "all layers ×2"):
    return runs[runs["method"] == label.split()[0]]
  method = "intelligent" if label.startswith("intelligent G′ case 1") else "matched_random"
  assert method == "intelligent" or label.startswith("matched random"), label
  threshold = float(re.search(r"t = (\d+\.\d+)", label).group(1))
  return runs[(runs["method"] == method) & ((runs["threshold"] - threshold).abs() < 1e-9)]


def paired_interval(arm, baseline) -> list[float]:
  """Mean of the per-seed differences and its 95 % Student-t interval, with NumPy/SciPy."""
  from scipy import stats

  a, b = (x.set_index("seed")["final_test_accuracy"] for x in (arm, baseline))
  diff = (a - b).dropna().to_numpy()
  half = stats.t.ppf(0.975, len(diff) - 1) * diff.std(ddof=1) / len(diff) ** 0.5
  return [diff.mean(), diff.mean() - half, diff.mean() + half]


def test_the_depth_study_table_is_computed_from_its_run_folders(depth_runs):
  """Every arm of results/depth-study with all five seeds finished is a row of docs/depth.md's
  results table, its numbers recomputed here from the run folders."""
  runs = depth_runs[depth_runs["finished"]]
  table = table_rows(read("docs/depth.md"), "| arm |")
  complete = runs.groupby(["method", "threshold"], dropna=False)["seed"].nunique()
  assert len(table) == int((complete == 5).sum())
  none = depth_arm(runs, "none")
  for label, accuracy, per_seed, vs_none, vs_matched in table:
    arm = depth_arm(runs, label).sort_values("seed")
    test = arm["final_test_accuracy"]
    assert list(arm["seed"]) == [0, 1, 2, 3, 4], label
    assert numbers(accuracy) == pytest.approx([test.mean(), test.std(ddof=1)], abs=0.006)
    assert numbers(per_seed) == pytest.approx(list(test), abs=0.006), label
    assert bool(vs_none) == (label != "none"), label
    if vs_none:
      assert numbers(vs_none) == pytest.approx(paired_interval(arm, none), abs=0.006), label
    matched = depth_arm(runs, label.replace("intelligent G′ case 1", "matched random"))
    assert bool(vs_matched) == (label.startswith("intelligent") and len(matched) == 5), label
    if vs_matched:
      assert numbers(vs_matched) == pytest.approx(paired_interval(arm, matched), abs=0.006)


def test_the_depth_studys_answer_is_its_primary_comparisons(depth_runs):
  """docs/depth.md opens with the pre-registered primary comparisons (intelligent − matched
  random at t = 1.0 and 2.0) of all 40 runs, recomputed here from the run folders."""
  assert int(depth_runs["finished"].sum()) == len(depth_runs) == 40
  answer = flat(next(p for p in read("docs/depth.md").split("\n\n") if p.startswith("**Answer")))
  for t in ("1.0", "2.0"):
    intelligent = depth_arm(depth_runs, f"intelligent G′ case 1, t = {t}")
    quote = re.search(rf"t = {t}: ([+−]\d+\.\d+ \[[^\]]+\])", answer).group(1)
    assert numbers(quote) == pytest.approx(
      paired_interval(intelligent, depth_arm(depth_runs, f"matched random, t = {t}")), abs=0.006
    ), t


def test_the_depth_studys_selection_sizes_are_counted_from_its_layer_stats(depth_runs):
  from gradamp_jax import analysis

  table = table_rows(read("docs/depth.md"), "| threshold | layers selected")
  assert [row[0] for row in table] == ["0.5", "1.0", "1.5", "2.0"]
  for threshold, *per_epoch in table:
    arm = depth_arm(depth_runs, f"intelligent G′ case 1, t = {threshold}").sort_values("seed")
    stats = [analysis.read_frame(w, "layer_stats.jsonl") for w in arm["workdir"]]
    for epoch, cell in zip((2, 4), per_epoch):
      counted = [int(f[f["epoch"] == epoch]["selected"].astype(bool).sum()) for f in stats]
      assert [int(x) for x in cell.split(", ")] == counted, (threshold, epoch)
