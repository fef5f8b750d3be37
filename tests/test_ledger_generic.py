"""The event store in ``ledger/`` is generic: it knows jobs, batches and items, never this application (ADDM, its
pipelines, its environment) nor one service (OpenAI, its status words, its models). What only they know is
handed in by ``addm_integration``, and nothing in ``ledger/`` imports it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import zlib
from pathlib import Path

import orjson

LEDGER = Path(__file__).resolve().parent.parent / "ledger"
# The application's and the service's names, and the status words of OpenAI's Batch API that no other service uses.
SPECIFIC = re.compile(
    r"openai|addm|review|restaurant|policy|task|gpt|validating|in_progress|finalizing|cancelling", re.IGNORECASE
)


def _sources() -> list[Path]:
    paths = sorted(LEDGER.glob("*.py"))
    assert len(paths) >= 8  # the package is where this test thinks it is
    return paths


def test_the_ledger_package_names_neither_the_application_nor_a_service() -> None:
    found = [
        f"{path.name}:{number}: {line.strip()}"
        for path in _sources()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if SPECIFIC.search(line)
    ]
    assert found == [], "\n".join(found)


def test_the_ledger_package_imports_nothing_of_the_application() -> None:
    imported = set()
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
    assert not {name for name in imported if name.split(".")[0] in ("addm_integration", "openai", "scripts")}


def _older_ledger(root: Path) -> None:
    """The records an older version (OpenAI's status words only, no phases) left of a job of four batches."""
    polls = [
        ("b1", "in_progress", {"total": 10, "completed": 4, "failed": 0}, []),
        ("b2", "failed", {}, [{"code": "token_limit_exceeded", "message": "Enqueued token limit reached"}]),
        ("b3", "cancelling", {"total": 10, "completed": 2, "failed": 0}, []),
    ]
    payloads: list[tuple[str, int, dict[str, object]]] = [
        ("JobCreated", 1, {"job_id": "j", "pipeline": "extract", "mode": "24hrbatch", "key": "k", "n_items": 40}),
        *(
            (
                "PartPlanned",
                2,
                {
                    "job_id": "j",
                    "idem_key": f"p{i}",
                    "n_items": 10,
                    "n_bytes": 4000,
                    "attempt": 1,
                    "input_path": f"/in{i}",
                    "model": "m",
                },
            )
            for i in range(1, 5)
        ),
        *(("BatchCreated", 1, {"job_id": "j", "idem_key": f"p{i}", "batch_id": f"b{i}"}) for i in range(1, 5)),
        *(("BatchPolled", 1, {"batch_id": b, "status": s, "counts": c, "errors": e}) for b, s, c, e in polls),
    ]
    lines = []
    for seq, (type_name, version, data) in enumerate(payloads, 1):
        ts = f"2026-01-01T0{seq // 6}:{seq % 6}0:00.000000Z"
        head = orjson.dumps({"seq": seq, "ts": ts, "type": type_name, "v": version, "data": data})[:-1]
        lines.append(head + b',"crc":"%08x"}\n' % zlib.crc32(head))
    (root / "data" / "ledger").mkdir(parents=True)
    (root / "data" / "ledger" / "events.jsonl").write_bytes(b"".join(lines))


def test_a_ledger_written_before_phases_folds_to_the_decisions_it_always_led_to(tmp_path: Path) -> None:
    from addm_integration.engine import pacing
    from addm_integration.store.context import Context
    from ledger.events import Phase

    _older_ledger(tmp_path)
    state = Context.open(tmp_path).state()
    b1, b2, b3, b4 = (state.batches[f"b{i}"] for i in range(1, 5))
    assert [(b.status, b.phase) for b in (b1, b2, b3, b4)] == [
        ("in_progress", Phase.RUNNING),
        ("failed", Phase.FAILED),
        ("cancelling", Phase.STOPPING),
        ("validating", Phase.SUBMITTED),  # never polled: what a new batch says
    ]
    assert b1.eta() is not None and b3.eta() is None  # a pace only for what runs
    assert pacing.refused_for_tokens(b2) and not pacing.refused_for_tokens(b1)
    assert pacing.enqueued(state) == {"m": 3 * 1000}  # the failed one holds no room in the queue


def test_the_generic_reading_reads_a_ledger_written_before_phases_without_knowing_its_service(tmp_path: Path) -> None:
    """``python -m ledger`` knows no application: an older poll says no phase, so the batch keeps the one it had."""
    _older_ledger(tmp_path)
    argv = [sys.executable, "-m", "ledger", "--root", str(tmp_path), "status", "--json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    (job,) = orjson.loads(result.stdout)
    assert [(b["status"], b["phase"]) for b in job["batches"]] == [
        ("in_progress", "submitted"),
        ("failed", "submitted"),
        ("cancelling", "submitted"),
        ("", "submitted"),
    ]
