"""Progress bars that every long loop of the library shares (training, sampling, inversion)."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress_bar(iterable, progress: bool = True, **kwargs):
    """tqdm.auto over ``iterable``; off when ``progress`` is False or TQDM_DISABLE is set (the tests
    set it so nbval does not store thousands of bar updates)."""
    off = (not progress) or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(iterable, disable=off, **kwargs)


__all__ = ["progress_bar"]
