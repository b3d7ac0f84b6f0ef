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
