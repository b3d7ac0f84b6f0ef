"""The package's layout rules (docs/architecture.md): who may import whom, short functions."""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "gradamp_jax")
METHOD = ("actions", "amplification", "directionality", "layers", "measures", "phases")


def modules():
  """(dotted name, path) of every module of the package."""
  for folder, _, files in os.walk(PACKAGE):
    for name in sorted(files):
      if name.endswith(".py"):
        path = os.path.join(folder, name)
        relative = os.path.relpath(path, os.path.dirname(PACKAGE))[:-3].replace(os.sep, ".")
        yield relative.removesuffix(".__init__"), path


def imported(path: str) -> set[str]:
  """The gradamp_jax modules ``path`` imports (anywhere in the file)."""
  found = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      found.update(a.name for a in node.names if a.name.startswith("gradamp_jax"))
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradamp_jax"):
      found.update(f"{node.module}.{a.name}" for a in node.names)
  return found


def part(module: str) -> str:
  """Which part of the layout a dotted module name (or an imported name) belongs to."""
  names = module.split(".")
  if len(names) == 1:
    return "method"
  if names[1] in METHOD:
    return "method"
  return names[1]  # training, sweeps, analysis, models, input_pipeline, jsonl, run_folder, ...


# The parts each part may import (besides itself).
ALLOWED = {
  "method": {"method"},
  "jsonl": set(),
  "run_folder": {"jsonl"},
  "models": set(),
  "input_pipeline": set(),
  "analysis": {"jsonl", "run_folder", "method"},  # the measures' definitions (names, labels)
  "training": {"method", "models", "input_pipeline", "jsonl", "run_folder"},
  "sweeps": {"method", "training", "jsonl", "run_folder", "models", "input_pipeline"},
  "main": {"training"},
  "report": {"analysis"},
}
# The command line composes the program with forks (--fork_from).
EXCEPTIONS = {("gradamp_jax.training.main", "sweeps")}


@pytest.mark.parametrize("module,path", list(modules()))
def test_imports_point_one_way(module, path):
  mine = part(module)
  for name in imported(path):
    theirs = part(name)
    if theirs != mine and (module, theirs) not in EXCEPTIONS:
      assert theirs in ALLOWED[mine], f"{module} ({mine}) imports {name} ({theirs})"


def test_the_rules_catch_a_harness_import_in_the_method():
  assert part("gradamp_jax.training.train") not in ALLOWED["method"]
  assert part("gradamp_jax.amplification") == part("gradamp_jax") == "method"


def body_lines(node) -> int:
  """A function's lines, its docstring aside."""
  lines = node.end_lineno - node.lineno + 1
  first = node.body[0]
  if isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant):
    if isinstance(first.value.value, str):
      lines -= first.end_lineno - first.lineno + 1
  return lines


def long_functions(source: str, limit: int = 60) -> list[str]:
  """``name: N lines`` for each function of ``source`` over ``limit`` lines (docstring aside)."""
  return [
    f"{node.name}: {body_lines(node)} lines"
    for node in ast.walk(ast.parse(source))
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > limit
  ]


def test_every_function_of_the_package_fits_on_a_screen():
  long = [
    f"{module}.{entry}" for module, path in modules() for entry in long_functions(open(path).read())
  ]
  assert not long, long


def test_the_length_rule_counts_code_not_docstrings():
  docstring = '    """' + "\n".join(["doc"] * 80) + '"""\n'
  code = "".join(f"    x{i} = {i}\n" for i in range(59))
  assert long_functions(f"def f():\n{docstring}{code}") == []
  assert long_functions(f"def g():\n{code}    y = 1\n    z = 2\n") == ["g: 62 lines"]
