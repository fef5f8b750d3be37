"""Short ids for people, and the one place a short id (any unique prefix, as git takes) becomes a full one.

Job and batch ids are long (``job_20261201_090512_a1b2c3``, ``batch_`` and 24 hex digits): printed whole they
do not fit a terminal, cut they cannot be copied. So every reading prints the shortest prefix that names one id
of the workspace, and every command that takes an id takes any prefix that names exactly one.
"""

from __future__ import annotations

from collections.abc import Iterable

MIN_SHORT = 10  # "job_202612", "batch_5f2e": short enough for a column, long enough to stay unique for long


class UnknownId(ValueError):
    """An id or prefix that names nothing, or more than one thing: a one-line message for the user."""


def shortest_unique(ids: Iterable[str], min_len: int = MIN_SHORT) -> dict[str, str]:
    """id -> its shortest prefix (at least ``min_len`` characters) that is the prefix of no other id."""
    ordered = sorted(set(ids))
    out: dict[str, str] = {}
    for i, ident in enumerate(ordered):
        shared = 0
        for other in (ordered[i - 1] if i else "", ordered[i + 1] if i + 1 < len(ordered) else ""):
            n = 0
            while n < min(len(ident), len(other)) and ident[n] == other[n]:
                n += 1
            shared = max(shared, n)
        out[ident] = ident[: max(min_len, shared + 1)]
    return out


def resolve(prefix: str, candidates: Iterable[str], what: str, where: object) -> str:
    """The one candidate equal to ``prefix`` or starting with it; UnknownId naming the choices otherwise."""
    pool = set(candidates)
    if prefix in pool:
        return prefix
    matches = sorted(c for c in pool if prefix and c.startswith(prefix))
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise UnknownId(f"no {what} {prefix!r} (nor one starting with it) in {where}")
    shown = ", ".join(matches[:4]) + (f" and {len(matches) - 4} more" if len(matches) > 4 else "")
    raise UnknownId(f"{prefix!r} names {len(matches)} of the {what}s in {where} ({shown}): give more of it")
