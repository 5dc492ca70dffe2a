"""Exercise checkers for the lessons, one module per lesson (``lesson01`` …).

A checker runs the student's answer against the reference solution kept here, prints a clear
right/wrong line with a hint, and returns True/False (so tests can call it too). Solutions live
in these modules, not in the notebooks: ``show_solution(fn)`` prints one when a student asks.
"""
from __future__ import annotations

import inspect
from typing import Callable


def report(ok: bool, what: str, hint: str = "") -> bool:
    """Print ✅/❌ for exercise ``what``; on failure add the hint. Returns ``ok``."""
    if ok:
        print(f"✅ {what}: correct")
    else:
        print(f"❌ {what}: not yet. {hint}".rstrip())
    return bool(ok)


def guarded(what: str, check: Callable[[], tuple[bool, str]]) -> bool:
    """Run ``check`` → (ok, hint); an exception in the student's code becomes a hint, not a crash."""
    try:
        ok, hint = check()
    except NotImplementedError:
        return report(False, what, "Replace `raise NotImplementedError` with your code.")
    except Exception as e:  # the student's code raised: say what and where
        return report(False, what, f"your code raised {type(e).__name__}: {e}")
    return report(ok, what, hint)


def show_solution(fn: Callable) -> None:
    """Print the source of a reference solution."""
    print(inspect.getsource(fn))
