"""The notebooks, executed by a Jupyter kernel (nbclient) on a small real sweep."""

import os

import nbformat
import pytest
from mock_sweep import copy_sweep
from nbclient import NotebookClient

pytestmark = pytest.mark.slow  # a Jupyter kernel per notebook
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = ("results.ipynb", "layer_statistics.ipynb")


def read(name):
  return nbformat.read(os.path.join(ROOT, "notebooks", name), as_version=4)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_executed(name):
  """A reader sees the figures without running anything: every code cell has run, in order."""
  book = read(name)
  nbformat.validate(book)
  code = [c for c in book.cells if c.cell_type == "code"]
  assert code and [c.execution_count for c in code] == list(range(1, len(code) + 1))
  assert any("image/png" in o.get("data", {}) for c in code for o in c.outputs)
  assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
  assert sum("parameters" in c.metadata.get("tags", []) for c in code) == 1


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_opens_on_the_shipped_results_from_its_folder(name):
  """Run where Jupyter starts it (notebooks/), with its own defaults."""
  book = read(name)
  NotebookClient(
    book,
    timeout=300,
    kernel_name="python3",
    resources={"metadata": {"path": os.path.join(ROOT, "notebooks")}},
  ).execute()
  assert len(outputs(book, "image/png")) >= 3


def execute(name, **parameters):
  """Runs a notebook with ``parameters`` set after its parameters cell; returns it."""
  book = read(name)
  at = next(i for i, c in enumerate(book.cells) if "parameters" in c.metadata.get("tags", []))
  source = "\n".join(f"{k} = {v!r}" for k, v in parameters.items())
  book.cells.insert(at + 1, nbformat.v4.new_code_cell(source))
  NotebookClient(
    book, timeout=300, kernel_name="python3", resources={"metadata": {"path": ROOT}}
  ).execute()
  return book


def outputs(book, kind):
  """Text of every ``kind`` output (e.g. "text/plain", "text/markdown", "image/png")."""
  found = []
  for cell in book.cells:
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream" and kind == "stream":
        found.append(out["text"])
      elif kind in out.get("data", {}):
        found.append(out["data"][kind])
  return found


@pytest.fixture(scope="module")
def sweep(mock_sweep, tmp_path_factory):
  return copy_sweep(mock_sweep, tmp_path_factory.mktemp("nb") / "sweep")


def test_results_notebook(sweep):
  book = execute("results.ipynb", ROOT=sweep)
  printed = "".join(outputs(book, "stream"))
  assert "12 runs, 12 finished" in printed
  tag = "resnet8_cifar10_reselect0"
  for name in (
    f"threshold_{tag}.png",
    f"curves_{tag}.png",
    f"selection_{tag}.png",
    f"selected_layers_{tag}.png",
    "directionality_resnet8_cifar10.png",
  ):
    assert name in printed
  assert len(outputs(book, "image/png")) == 5
  markdown = "".join(outputs(book, "text/markdown"))
  assert "| resnet8 | sgd | once per phase |" in markdown and "G c1" in markdown
  assert "Δ vs none [95 % CI]" in markdown and "seconds per epoch" in markdown


def test_layer_statistics_notebook(sweep):
  workdir = os.path.join(sweep, "matched_random", "method=matched_random-threshold=0.5-seed=0")
  book = execute("layer_statistics.ipynb", WORKDIR=workdir)
  printed = "".join(outputs(book, "stream"))
  assert "'method': 'matched_random'" in printed
  # directionality heatmap, one z-score figure (one selection), the G vs G′ scatter
  assert len(outputs(book, "image/png")) == 3
  tables = "".join(outputs(book, "text/plain"))
  assert "spearman" in tables and "selected_G_prime" in tables
  assert "by_measure" in tables and "overlap" in tables
