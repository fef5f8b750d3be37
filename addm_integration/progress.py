"""Progress bars for long interactive work: on a terminal only, never under cron, in a pipe or in tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(total: int, label: str) -> Iterator[Callable[[], None]]:
    """Yield a function to call once per unit of work done."""
    if not sys.stderr.isatty() or total == 0:
        yield lambda: None
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda: bar.advance(task)
