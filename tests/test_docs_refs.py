"""Every citation in the repository resolves inside it: each `docs/reference.md §N` (with its `step K` /
`item K`) names a section, step or item that docs/reference.md has, no `§` stands without the document
it belongs to, and nothing points at documents a clone does not have (a spec, issue or audit numbers of
the project's tracker, paths outside the repository)."""

import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(REPO, "docs", "reference.md")
SCANNED_DIRS = ("x2vlm_jax", "tools", "tests", "docs", "notebooks", ".ci")
SUFFIXES = (".py", ".md", ".ipynb", ".txt", ".toml", ".yaml", ".yml", ".cfg", ".sh")
TOP_FILES = ("README.md", "main.py", "Makefile", "pyproject.toml", "setup.py", "setup.cfg")
SELF = os.path.relpath(os.path.abspath(__file__), REPO)

# Built from pieces so that this file does not match its own patterns.
SECTION = "\u00a7"
FORBIDDEN = {
  "a spec section": re.compile(r"\bspec\s+" + SECTION, re.IGNORECASE),
  "an issue number of the project tracker": re.compile(r"\bissues?\s+#", re.IGNORECASE),
  "an audit number": re.compile(r"\baudits?\s+#", re.IGNORECASE),
  "a path outside the repository": re.compile(r"\.\./shared|/work/shared|X2VLM_" + "SPEC"),
}
# `§1.2`, `§10 item 7`, `§2.2 steps 1, 4, 5`; a trailing full stop is not part of the number.
CITATION = re.compile(SECTION + r"(\d+(?:\.\d+)*)(?:\s+(step|steps|item|items)\s+(\d+(?:\s*,\s*\d+)*))?")


def _text(path):
  with open(path, encoding="utf-8") as f:
    raw = f.read()
  if path.endswith(".ipynb"):  # the cells' text, not the JSON escapes of it
    return "\n".join("".join(cell.get("source", [])) for cell in json.loads(raw)["cells"])
  return raw


def _scanned_files():
  for top in SCANNED_DIRS:
    for root, dirs, files in os.walk(os.path.join(REPO, top)):
      dirs[:] = [d for d in dirs if d != "__pycache__" and not d.startswith(".")]
      for name in sorted(files):
        if name.endswith(SUFFIXES):
          yield os.path.relpath(os.path.join(root, name), REPO)
  for name in TOP_FILES + tuple(f for f in sorted(os.listdir(REPO)) if f.startswith("requirements")):
    if os.path.isfile(os.path.join(REPO, name)):
      yield name


def reference_anchors(text):
  """{section number: {"step": {..}, "item": {..}}} from docs/reference.md's headings, its numbered
  lists (steps) and the first column of its tables (items)."""
  anchors, current = {}, None
  for line in text.splitlines():
    heading = re.match(r"#{2,4}\s+(\d+(?:\.\d+)*)\.?\s", line)
    if heading:
      current = heading.group(1)
      anchors[current] = {"step": set(), "item": set()}
      continue
    if current is None:
      continue
    step = re.match(r"(\d+)\.\s", line)
    if step:
      anchors[current]["step"].add(int(step.group(1)))
    item = re.match(r"\|\s*(\d+)\s*\|", line)
    if item:
      anchors[current]["item"].add(int(item.group(1)))
  return anchors


def citations(text):
  """[(line number, section, kind or None, [numbers])] of the `§` citations of a text, and the lines
  where a `§` stands before any `reference.md` on its line (a bare citation)."""
  found, bare = [], []
  for number, line in enumerate(text.splitlines(), 1):
    if SECTION not in line:
      continue
    doc = line.find("reference.md")
    if doc < 0 or doc > line.find(SECTION):
      bare.append((number, line.strip()))
    for m in CITATION.finditer(line):
      kind = m.group(2).rstrip("s") if m.group(2) else None
      numbers = [int(n) for n in re.split(r"\s*,\s*", m.group(3))] if m.group(3) else []
      found.append((number, m.group(1), kind, numbers))
  return found, bare


@pytest.fixture(scope="module")
def anchors():
  return reference_anchors(_text(REFERENCE))


def test_reference_has_the_numbered_structure(anchors):
  # The parser itself: the top sections, the steps of §1.2 / §2.2 / §3.2 and the 21 quirk items.
  assert {str(n) for n in range(0, 14)} <= set(anchors)
  assert anchors["1.2"]["step"] == set(range(1, 8))
  assert anchors["2.2"]["step"] == set(range(1, 7))
  assert anchors["3.2"]["step"] == set(range(1, 6))
  assert anchors["10"]["item"] == set(range(1, 22))


def test_parsers_on_hand_cases():
  # Distinct cases so that a parser that drops the kind, the list or the bare check fails.
  found, bare = citations("a (docs/reference.md §3.1–§3.2, §2.2 steps 1, 4, 5; §10 item 7).\nb §4.3 c\n")
  assert found == [(1, "3.1", None, []), (1, "3.2", None, []), (1, "2.2", "step", [1, 4, 5]), (1, "10", "item", [7]),
                   (2, "4.3", None, [])]  # fmt: skip
  assert bare == [(2, "b §4.3 c")]
  assert citations("see docs/reference.md §5.1.")[0] == [(1, "5.1", None, [])]
  assert reference_anchors("## 3. A\n1. x\n### 3.1 B\n| 2 | y |\n") == {
    "3": {"step": {1}, "item": set()},
    "3.1": {"step": set(), "item": {2}},
  }


def test_every_cited_section_exists(anchors):
  missing, count = [], 0
  for rel in _scanned_files():
    if rel == SELF:
      continue
    found, _ = citations(_text(os.path.join(REPO, rel)))
    for line, section, kind, numbers in found:
      count += 1
      if section not in anchors:
        missing.append(f"{rel}:{line}: §{section}")
      elif kind:
        missing += [f"{rel}:{line}: §{section} {kind} {n}" for n in numbers if n not in anchors[section][kind]]
  assert count > 150, f"only {count} citations found: the scan or the pattern is broken"
  assert not missing, "cited but not in docs/reference.md:\n" + "\n".join(missing)


def test_no_bare_section_signs():
  bare = []
  for rel in _scanned_files():
    if rel in (SELF, os.path.relpath(REFERENCE, REPO)):  # inside the reference a bare § is its own section
      continue
    bare += [f"{rel}:{line}: {text[:100]}" for line, text in citations(_text(os.path.join(REPO, rel)))[1]]
  assert not bare, "a § without its document (write `docs/reference.md §N`):\n" + "\n".join(bare)


def test_no_reference_outside_the_repository():
  hits = []
  for rel in _scanned_files():
    if rel == SELF:
      continue
    text = _text(os.path.join(REPO, rel))
    for what, pattern in FORBIDDEN.items():  # on the whole text: a citation may be broken over two lines
      hits += [f"{rel}:{text.count(chr(10), 0, m.start()) + 1}: {what}: {m.group(0)!r}" for m in pattern.finditer(text)]
  assert not hits, "references a clone cannot resolve:\n" + "\n".join(hits)


def test_forbidden_patterns_match_what_they_name():
  assert FORBIDDEN["a spec section"].search("(Spec " + SECTION + "5.6)")
  assert FORBIDDEN["a spec section"].search("(spec\n  " + SECTION + "10 item 14")
  assert FORBIDDEN["an issue number of the project tracker"].search(
    "see issue " + "#16"
  )  # split: this file is scanned too
  assert FORBIDDEN["an audit number"].search("audit " + "#3")
  assert FORBIDDEN["a path outside the repository"].search("see ../shared/notes/ANCHORS.md")
  assert not FORBIDDEN["an issue number of the project tracker"].search("github.com/zengyan-97/X2-VLM/issues/15")
