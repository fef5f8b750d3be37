"""custom_id codec: the only routing information a batch result carries back.

Components are joined with ``::``. Inside a component, ``%`` and ``:`` are percent-escaped, so a component can
never contain the separator and decoding is a plain split: lossless for every string, and ids made of
``[A-Za-z0-9_-]`` come out unchanged (readable in the batch files and the ledger).
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

SEP = "::"


class CustomIdError(ValueError):
    pass


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A")


def _unescape(part: str) -> str:
    if "%" not in part and ":" not in part:  # the plain ids of real data: nothing to undo
        return part
    out: list[str] = []
    i = 0
    while i < len(part):
        ch = part[i]
        if ch == "%":
            code = part[i + 1 : i + 3]
            if code == "25":
                out.append("%")
            elif code.upper() == "3A":
                out.append(":")
            else:
                raise CustomIdError(f"bad escape {part[i : i + 3]!r}")
            i += 3
        elif ch == ":":
            raise CustomIdError("stray ':'")
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def encode(*parts: str) -> str:
    return SEP.join(_escape(p) for p in parts)


def _parts(custom_id: str) -> list[str]:
    parts = custom_id.split(SEP)
    if "%" not in custom_id and ":" not in "".join(parts):  # every ':' in a separator (a count walks every char)
        return parts
    return [_unescape(p) for p in parts]


def decode(custom_id: str) -> tuple[str, ...]:
    return tuple(_parts(custom_id))


class ReviewId(NamedTuple):
    """``review::<task_id>::<business_id>::<review_id>``: one judgment of one review for one task.

    Tuples, not dataclasses: every line of a 50,000-line batch file is routed through one of these.
    """

    task_id: str
    business_id: str
    review_id: str

    def encode(self) -> str:
        return encode("review", self.task_id, self.business_id, self.review_id)


class SampleId(NamedTuple):
    """``sample::<run_name>::<sample_id>``: one verdict for one restaurant in one run."""

    run_name: str
    sample_id: str

    def encode(self) -> str:
        return encode("sample", self.run_name, self.sample_id)


class RunId(NamedTuple):
    """``policy::<topic>::<business_id>::<review_id>::<model>::run<N>``: one of a review's judgments in topic mode.

    Upstream's name for the topic-mode id, kept so its batch files read the same; ``run`` counts from 1.
    """

    topic: str
    business_id: str
    review_id: str
    model: str
    run: int

    def encode(self) -> str:
        return encode("policy", self.topic, self.business_id, self.review_id, self.model, f"run{self.run}")


# A record built straight from its checked fields: ``_make`` and the generated ``__new__`` are slow calls, a
# fifth of the time routing a result line takes.
_record = tuple.__new__


def parse(custom_id: str) -> ReviewId | SampleId | RunId:
    """Decode a custom_id into its routing record; raises CustomIdError for anything else."""
    match _parts(custom_id):
        case ["review", task_id, business_id, review_id]:
            return _record(ReviewId, (task_id, business_id, review_id))
        case ["sample", run_name, sample_id]:
            return _record(SampleId, (run_name, sample_id))
        case ["policy", topic, business_id, review_id, model, run] if run[:3] == "run" and run[3:].isdigit():
            if run.isascii() and run[3] != "0":
                return _record(RunId, (topic, business_id, review_id, model, int(run[3:])))
    raise CustomIdError(f"not an ADDM custom_id: {custom_id!r}")


Target = TypeVar("Target", ReviewId, SampleId, RunId)


def route(custom_id: str, kind: type[Target]) -> Target | None:
    """The item a result line names, when it is a ``kind``; None for a malformed id or another pipeline's line.

    The one reading of a result line's custom_id by both pipelines; each then checks that the item is one its job
    asked for (once per line of a 50,000-line batch: kept to a parse and a type check).
    """
    try:
        target = parse(custom_id)
    except CustomIdError:
        return None
    return target if type(target) is kind else None  # type: ignore[return-value]
