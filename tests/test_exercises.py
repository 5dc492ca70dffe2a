"""Every lesson's exercises, in one place: each ``check_<name>`` in ``ldm_edu.exercises.lessonNN``
has a ``solution_<name>`` that it accepts, takes only the student's answer, and is shown at least
one plausible wrong answer (named after the mistake) somewhere in the per-lesson mistake
catalogues ``tests/test_exercises_*.py`` (their ``WRONG`` tables or, for lesson 07, their tests).
"""
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import ldm_edu.exercises as exercises

LESSONS = sorted(m.name for m in pkgutil.iter_modules(exercises.__path__) if m.name.startswith("lesson"))
CHECKERS = [(lesson, name) for lesson in LESSONS
            for name, fn in inspect.getmembers(importlib.import_module(f"ldm_edu.exercises.{lesson}"),
                                               inspect.isfunction)
            if name.startswith("check_") and fn.__module__ == f"ldm_edu.exercises.{lesson}"]
CATALOGUES = sorted(Path(__file__).parent.glob("test_exercises_*.py"))
# (checker, wrong answer, hint it must print) from every catalogue's WRONG table; pytest has put
# tests/ on sys.path, so the catalogues import by their file names.
MISTAKES = [m for path in CATALOGUES for m in getattr(importlib.import_module(path.stem), "WRONG", [])]


def test_every_lesson_has_exercises():
    assert [lesson for lesson in LESSONS] == [f"lesson{i:02d}" for i in range(1, len(LESSONS) + 1)]
    for lesson in LESSONS:
        assert any(le == lesson for le, _ in CHECKERS), f"{lesson} has no check_<name>"


@pytest.mark.parametrize("lesson,name", CHECKERS, ids=lambda v: str(v))
def test_checker_takes_only_the_answer_and_accepts_its_solution(lesson, name, capsys):
    module = importlib.import_module(f"ldm_edu.exercises.{lesson}")
    check = getattr(module, name)
    solution = getattr(module, "solution_" + name[len("check_"):], None)
    assert solution is not None, f"{lesson}.{name} has no solution_{name[len('check_'):]}"
    required = [p for p in inspect.signature(check).parameters.values()
                if p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(required) == 1, f"{lesson}.{name} must take only the student's answer, takes {required}"
    assert check(solution) is True
    assert "✅" in capsys.readouterr().out


@pytest.mark.parametrize("lesson,name", CHECKERS, ids=lambda v: str(v))
def test_checker_rejects_a_blank_answer(lesson, name, capsys):
    def blank(*args, **kwargs):
        raise NotImplementedError
    check = getattr(importlib.import_module(f"ldm_edu.exercises.{lesson}"), name)
    assert check(blank) is False
    assert "NotImplementedError" in capsys.readouterr().out


@pytest.mark.parametrize("check,wrong,hint", MISTAKES, ids=[f"{c.__module__[-8:]}.{c.__name__}-{h[:40]}"
                                                            for c, _, h in MISTAKES])
def test_a_named_mistake_is_rejected_with_its_hint(check, wrong, hint, capsys):
    assert check(wrong) is False
    out = capsys.readouterr().out
    assert "❌" in out and hint in out, out


def test_every_checker_meets_a_named_mistake():
    """Each checker appears with a wrong answer in a mistake catalogue (a WRONG table entry, or a
    test of the catalogue that calls it with a wrong answer)."""
    mentioned = set()
    for path in CATALOGUES:
        mentioned |= set(re.findall(r"\.(check_\w+)", path.read_text()))
    missing = [f"{lesson}.{name}" for lesson, name in CHECKERS if name not in mentioned]
    assert not missing, f"no wrong answer is ever shown to: {missing}"
