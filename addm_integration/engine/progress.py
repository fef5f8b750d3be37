"""Progress bars for long interactive work: on a terminal only, never under cron, in a pipe or in tests."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress(total: int, label: str, *, already: int = 0, counts: bool = False) -> Iterator[Callable[..., None]]:
    """Yield a function to call once per unit of work done (``failed=True`` for one that failed).

    With ``counts`` the bar shows what succeeded and what failed apart; ``already`` says how much an earlier run
    had done, so a resumed run does not look like it starts from nothing.
    """
    if not sys.stderr.isatty() or total == 0:
        yield lambda failed=False: None
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

    before = f" ({already:,} done before)" if already else ""
    tally = ": {task.fields[ok]:,} ok, {task.fields[failed]:,} failed" if counts else ""
    columns = (
        TextColumn(f"{label}{before}"),
        BarColumn(bar_width=20),
        TaskProgressColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}" + tally),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as bar:
        task = bar.add_task(label, total=total, ok=0, failed=0)
        counts = {"ok": 0, "failed": 0}

        def advance(failed: bool = False) -> None:
            counts["failed" if failed else "ok"] += 1
            bar.update(task, advance=1, **counts)

        yield advance
