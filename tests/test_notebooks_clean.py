"""Committed lessons carry no outputs, are valid notebooks, and state their preset up front."""
from pathlib import Path

import nbformat
import pytest

LESSONS = sorted((Path(__file__).resolve().parents[1] / "lessons").glob("*.ipynb"))


def test_there_are_lessons():
    assert LESSONS, "no notebooks under lessons/"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_notebook_is_stripped_and_valid(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: cells {dirty} have outputs; run `make strip`"
    assert "widgets" not in nb.metadata, f"{path.name}: widget state saved; run `make strip`"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_notebook_states_its_preset_first(path):
    nb = nbformat.read(path, as_version=4)
    first_code = next(c for c in nb.cells if c.cell_type == "code")
    assert "get_preset" in first_code.source, f"{path.name}: the first code cell must pick the preset"
