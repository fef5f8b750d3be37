#!/usr/bin/env python3
"""Performance figures, each printed as a ratio against a baseline measured in the same run (never asserted).

    python scripts/bench.py ledger [--events 1000000]
    python scripts/bench.py scale  [--lines 50000] [--cache 1000000]   (ends with the ondemand figures)
    python scripts/bench.py ondemand [--cache 1000000]
    python scripts/bench.py topic  [--reviews 50000] [--runs 4]   (2 models x 4 runs: apply + aggregate)

``ledger``: appends per second with fsync from 1 and 4 processes; a no-op cron fetch (batch still running) with a
long history in the ledger divided by the same with a short one (goal <= 1.3); audit of one custom_id in the long
ledger (goal < 100 ms); ``addm-ledger audit CUSTOM_ID`` with 1,000,000 applied items of history (20 jobs of
50,000, the id applied once per job) divided by the same in a fresh workspace of one such job (goal <= 1.3).
``--only`` runs one of the two groups. ``scale``: see ``bench_scale``. ``topic``: the apply of a topic job's last
part with the aggregate of the whole job, against the bare parse of that part's output and against a floor that
writes the same entries with no check and no vote (``_TOPIC_FLOOR``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from fake_openai import FakeOpenAI  # noqa: E402
from gen_data import generate  # noqa: E402

from ledger.cli import audit_entries  # noqa: E402
from ledger.events import (  # noqa: E402
    BatchCreated,
    BatchPolled,
    BatchSettled,
    CronInstalled,
    CronRemoved,
    FilesStored,
    FileUploaded,
    ItemsApplied,
    JobCreated,
    JobFinalized,
    PartPlanned,
    Phase,
    SendStarted,
)
from ledger.index import Index  # noqa: E402
from ledger.log import Ledger  # noqa: E402

BARE = ["env", "-i", "HOME=/tmp", "LOGNAME=bench", "SHELL=/bin/sh", "PATH=/usr/bin:/bin"]
_APPENDER = """
import sys, time
from pathlib import Path
from ledger.events import CronInstalled
from ledger.log import Ledger
ledger, n = Ledger(Path(sys.argv[1])), int(sys.argv[2])
for i in range(n):
    ledger.append([CronInstalled(f"b{i}", "*/5 * * * *")])
"""


def line(name: str, value: str) -> None:
    print(f"{name:<58} {value}", flush=True)


def appends_per_second(directory: Path, processes: int, per_process: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    start = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, "-c", _APPENDER, str(directory), str(per_process)], env=env)
        for _ in range(processes)
    ]
    for p in procs:
        p.wait()
    return processes * per_process / (time.perf_counter() - start)


def history(n_events: int, ids_per_job: int = 130) -> list[list]:
    """Finished jobs as a real ledger holds them (~100 events each, polls included), in append-sized chunks."""
    chunks = []
    job = 0
    total = 0
    while total < n_events:
        j, b, idem = f"hist_job_{job}", f"hist_batch_{job}", f"hist_job_{job}-000"
        ids = tuple(f"review::G1a::biz{job:07d}::rev{i:05d}xxxxxxxxxxxxx" for i in range(ids_per_job))
        events = [
            JobCreated(j, "extract", "24hrbatch", f"extract|hist|{job}", {"pipeline": {"task": "G1a"}}, ids_per_job),
            PartPlanned(j, idem, ids_per_job, 123456, 1, f"/tmp/{idem}.jsonl", "gpt-5-nano"),
            SendStarted(j, idem),
            FileUploaded(j, idem, f"file-{job}"),
            BatchCreated(j, idem, b),
            CronInstalled(b, "*/5 * * * *"),
        ]
        counts = ({"total": ids_per_job, "completed": k} for k in range(86))
        events += [BatchPolled(b, "in_progress", c, (), Phase.RUNNING) for c in counts]
        events += [
            FilesStored(b, {"output": {"file_id": f"file-o{job}", "bytes": 1, "sha256": "0"}}),
            FilesStored(b, {"error": {"file_id": None}}),
            ItemsApplied(j, b, ids, 1, "apply", {"prompt_tokens": 1000, "completion_tokens": 100}),
            BatchSettled(b, "completed", ids_per_job, 0),
            JobFinalized(j, {"judgments": ids_per_job}),
            CronRemoved(b),
        ]
        chunks.append(events)
        total += len(events)
        job += 1
    return chunks


def workspace(root: Path, server: FakeOpenAI, events: int) -> tuple[str, float]:
    """A workspace with ``events`` events of history and one running batch; (its cron command, index build s)."""
    generate(root, n_restaurants=2, seed=3)
    env_file = root / ".env"
    env_file.write_text(f"OPENAI_API_KEY=sk-bench\nOPENAI_BASE_URL={server.base_url}\n")
    env_file.chmod(0o600)
    ledger = Ledger(root / "data" / "ledger")
    chunk: list = []
    for events_of_job in history(events):
        chunk += events_of_job
        if len(chunk) >= 20_000:
            ledger.append(chunk)
            chunk = []
    if chunk:
        ledger.append(chunk)
    start = time.perf_counter()
    Index(ledger).catch_up()
    built = time.perf_counter() - start
    tab = root / "crontab"
    submit = [sys.executable, "-m", "addm_integration.extract", "--root", str(root), "--task", "G1a"]
    subprocess.run([*submit, "--llm-mode", "24hrbatch", "--crontab-file", str(tab)], check=True, capture_output=True)
    from crontab import CronTab

    (command,) = [j.command for j in CronTab(tabfile=str(tab)) if j.comment.startswith("ADDM_BATCH_")]
    return command, built


def time_cron(command: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run([*BARE, "/bin/sh", "-c", command], capture_output=True, cwd="/")
        times.append(time.perf_counter() - start)
        assert result.returncode == 0 and not result.stdout and not result.stderr, result
    return statistics.median(times)


def bench_ledger(n_events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        line("appends/s with fsync, 1 process", f"{appends_per_second(tmp_path / 'a1', 1, 1000):,.0f}")
        line("appends/s with fsync, 4 processes (total)", f"{appends_per_second(tmp_path / 'a4', 4, 500):,.0f}")
        with FakeOpenAI(batch_delay=10**6) as server:
            small_cmd, _ = workspace(tmp_path / "small", server, 90)
            start = time.perf_counter()
            big_cmd, built = workspace(tmp_path / "big", server, n_events)
            line(f"build a {n_events:,}-event workspace (once)", f"{time.perf_counter() - start:.1f} s")
            line("  of which indexing it from scratch (once)", f"{built:.1f} s")
            time_cron(small_cmd, 1)
            time_cron(big_cmd, 1)
            pairs = [(time_cron(small_cmd, 1), time_cron(big_cmd, 1)) for _ in range(11)]  # interleaved: same noise
            small, big = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
            line("no-op cron fetch, ~100 events (median of 11)", f"{small * 1000:.0f} ms")
            line(f"no-op cron fetch, {n_events:,} events (median of 11)", f"{big * 1000:.0f} ms")
            line("  ratio (goal <= 1.3)", f"{big / small:.3f}")
        ledger = Ledger(tmp_path / "big" / "data" / "ledger")
        middle = sum(1 for _ in history(n_events)) // 2
        cid = f"review::G1a::biz{middle:07d}::rev00077xxxxxxxxxxxxx"
        times = []
        for _ in range(21):
            start = time.perf_counter()
            entries = audit_entries(Index(ledger).applications(cid), custom_id=cid, batch_id=None)
            times.append(time.perf_counter() - start)
        assert len(entries) == 1, entries
        line(f"audit of one custom_id at {n_events:,} events (median)", f"{statistics.median(times) * 1000:.1f} ms")
        line("  goal < 100 ms; ratio to goal", f"{statistics.median(times) / 0.1:.3f}")


def _applied_history(root: Path, jobs: int, per_job: int, cid: str) -> None:
    """``jobs`` finished jobs of ``per_job`` applied items each, ``cid`` among the items of every one."""
    ledger = Ledger(root / "data" / "ledger")
    for j in range(jobs):
        job, batch, idem = f"audit_job_{j}", f"audit_batch_{j}", f"audit_job_{j}-000"
        ids = (cid, *(f"review::G1a::biz{j:07d}::rev{i:05d}xxxxxxxxxxxxx" for i in range(per_job - 1)))
        ledger.append(
            [
                JobCreated(job, "extract", "24hrbatch", f"extract|audit|{j}", {"pipeline": {"task": "G1a"}}, per_job),
                PartPlanned(job, idem, per_job, 1, 1, f"/tmp/{idem}.jsonl", "gpt-5-nano"),
                BatchCreated(job, idem, batch),
            ]
        )
        ledger.append([ItemsApplied(job, batch, ids, 1), BatchSettled(batch, "completed", per_job, 0)])
        ledger.append([JobFinalized(job, {})])


def bench_audit_history(jobs: int = 20, per_job: int = 50_000) -> None:
    cid = "review::G1a::biz_audited::rev_audited"
    command = [sys.executable, "-m", "addm_integration.ledger", "--root"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}

    def cli(root: Path) -> float:
        start = time.perf_counter()
        out = subprocess.run([*command, str(root), "audit", cid, "--json"], env=env, capture_output=True, check=True)
        elapsed = time.perf_counter() - start
        assert len(orjson.loads(out.stdout)) == (jobs if root.name == "history" else 1), out
        return elapsed

    def inside(root: Path) -> float:
        start = time.perf_counter()
        audit_entries(Index(Ledger(root / "data" / "ledger")).applications(cid), custom_id=cid, batch_id=None)
        return time.perf_counter() - start

    with tempfile.TemporaryDirectory() as tmp:
        fresh, history = Path(tmp) / "fresh", Path(tmp) / "history"
        _applied_history(fresh, 1, per_job, cid)
        _applied_history(history, jobs, per_job, cid)
        cli(fresh), cli(history)  # the first audit indexes the applied items, once
        pairs = [(cli(fresh), cli(history)) for _ in range(11)]  # interleaved: the same noise on both sides
        small, big = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        line(f"addm-ledger audit CUSTOM_ID, fresh: 1 job of {per_job:,} (median of 11)", f"{small * 1000:.0f} ms")
        line(f"  with {jobs * per_job:,} applied items of history ({jobs} jobs)", f"{big * 1000:.0f} ms")
        line("  ratio (goal <= 1.3)", f"{big / small:.3f}")
        pairs = [(inside(fresh), inside(history)) for _ in range(21)]
        small, big = statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)
        line("  the same read in process (no interpreter start), fresh", f"{small * 1000:.1f} ms")
        line(f"  the same read in process, {jobs} applications found", f"{big * 1000:.1f} ms")


# A cron run's fetch of one batch (argv: root, batch id, a word its message must hold).
_FETCH = """
import sys, time
from pathlib import Path
from addm_integration.store.context import Context
from addm_integration.addm.extract import Extract
from addm_integration.engine import advance
from addm_integration.provider import openai_api
start = time.perf_counter()
root = Path(sys.argv[1])
said = advance.advance(Context.open(root, connect=openai_api.connector(root)), Extract, sys.argv[2])
assert said and sys.argv[3] in said, said
print(time.perf_counter() - start, _peak_mb())
"""

_SUBMIT = """
import sys, time
from addm_integration import extract
from addm_integration.engine import submit
sending = [0.0]
send_pending_parts = submit.send_pending_parts
def timed(*args, **kwargs):
    began = time.perf_counter()
    try:
        return send_pending_parts(*args, **kwargs)
    finally:
        sending[0] += time.perf_counter() - began
submit.send_pending_parts = timed
start = time.perf_counter()
assert extract.main(sys.argv[1:]) == 0
print(time.perf_counter() - start, _peak_mb(), sending[0])
"""

# What sending cannot do without: the staged bytes through the SDK and the batch created, one call each.
_BARE_UPLOAD = """
import sys, time
from openai import OpenAI
api = OpenAI(api_key="sk-bench", base_url=sys.argv[2])
start = time.perf_counter()
with open(sys.argv[1], "rb") as f:
    uploaded = api.files.create(file=("bench.jsonl", f), purpose="batch")
api.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
print(time.perf_counter() - start, _peak_mb())
"""

# The same judgments as the apply writes, built the shortest way: the answer, plus what the job's snapshot says
# of the review. The bench checks that both wrote the same cache content before it compares their times.
_BARE_APPLY = """
import os, sys, time, orjson
start = time.perf_counter()
reviews = orjson.loads(open(sys.argv[3], "rb").read())
judgments = {}
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = orjson.loads(raw)
        review_id = line["custom_id"].rsplit("::", 1)[1]
        answer = orjson.loads(line["response"]["body"]["choices"][0]["message"]["content"])
        _, date, stars, useful = reviews[review_id]
        judgments[review_id] = {
            "review_id": review_id,
            **(answer if answer["is_relevant"] else {"is_relevant": False}),
            "date": date,
            "stars": stars,
            "useful": useful,
            "_term_hash": sys.argv[4],
        }
with open(sys.argv[2], "wb") as out:
    out.write(orjson.dumps({"G1a": judgments}))
    out.flush()
    os.fsync(out.fileno())
print(time.perf_counter() - start, _peak_mb())
"""

# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child would report its parent's peak.
_PEAK = """
def _peak_mb():
    for row in open("/proc/self/status"):
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024
"""


def _child(code: str, *args: str) -> tuple[float, ...]:
    """The figures a child printed on its last line: seconds and peak MB first, then any of its own."""
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    out = subprocess.run(
        [sys.executable, "-c", _PEAK + code, *args], env=env, capture_output=True, text=True, check=True
    )
    return tuple(float(x) for x in out.stdout.splitlines()[-1].split())


def best_of(repeat: int, cases: dict[str, Callable[[], tuple[float, float]]]) -> list[tuple[float, float]]:
    """(best time, peak RSS) of each case over ``repeat`` rounds, in the order given.

    The cases take turns within each round, so that a noisy moment of a shared machine hits every side alike.
    """
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in cases}
    for _ in range(repeat):
        for label, case in cases.items():
            runs[label].append(case())
    return [(min(t for t, _ in r), max(m for _, m in r)) for r in runs.values()]


def _child_in_copy(template: Path, root: Path, code: str, *args: str) -> Callable[[], tuple[float, ...]]:
    """A case that runs ``code`` in a fresh copy of ``template`` at ``root``: each round starts from the same files."""

    def case() -> tuple[float, ...]:
        shutil.rmtree(root, ignore_errors=True)
        shutil.copytree(template, root)
        os.sync()  # the copy's dirty pages must not land inside the measured fsyncs
        return _child(code, str(root), *args)

    return case


def _apply_workspace(root: Path, n_lines: int) -> str:
    """A workspace whose ledger holds one completed batch of ``n_lines`` with its files stored: fetch only applies."""
    from fake_openai import chat_completion

    from addm_integration.addm.extract import Extract
    from addm_integration.engine.pipeline import job_key
    from addm_integration.engine.plan import batch_lines, ids_digest
    from addm_integration.provider.openai_api import request_line
    from addm_integration.store.context import Context
    from ledger.events import BatchCreated, BatchPolled, FilesStored, JobCreated, PartPlanned, Phase

    generate(root, n_restaurants=n_lines // 20 + 50, seed=9)
    ctx = Context.open(root)
    pipeline = Extract(ctx, "G1a")
    batch_id, job_id, idem = "batch_bench", "job_bench", "job_bench-000"
    batch_dir = ctx.ws.batch_dir(batch_id)
    batch_dir.mkdir(parents=True)
    ids = []
    with open(batch_dir / "input.jsonl", "wb") as inp, open(batch_dir / "output.jsonl", "wb") as out:
        for n, (cid, raw, _) in enumerate(batch_lines(pipeline.work(job_id), request_line)):
            if n == n_lines:
                break
            ids.append(cid)
            inp.write(raw)
            _, body = chat_completion(orjson.loads(raw)["body"])
            response = {"status_code": 200, "request_id": f"req_{n}", "body": body}
            out.write(orjson.dumps({"id": f"br_{n}", "custom_id": cid, "response": response, "error": None}) + b"\n")
    params = {"pipeline": pipeline.params(), "base_url": "http://127.0.0.1:9/v1", "cron": None, "max_attempts": 1}
    files = {"output": {"file_id": "file-o"}, "error": {"file_id": None}}
    ctx.record(
        JobCreated(job_id, "extract", "24hrbatch", job_key(ctx, pipeline), params, n_lines),
        PartPlanned(job_id, idem, n_lines, 0, 1, str(batch_dir / "input.jsonl"), "gpt-5-nano", None, ids_digest(ids)),
        BatchCreated(job_id, idem, batch_id),
        BatchPolled(batch_id, "completed", {"total": n_lines, "completed": n_lines, "failed": 0}, (), Phase.FINISHED),
        FilesStored(batch_id, files),
    )
    return batch_id


def _prefill(cache: Path, n: int) -> None:
    from addm_integration.store.cache import JudgmentCache

    judgment = {"review_id": "x" * 22, "is_relevant": False, "date": "2019-03-02 18:40:11", "stars": 5.0, "useful": 0}
    JudgmentCache(cache).merge("G1a", {f"old{i:019d}": {**judgment, "n": i} for i in range(n)})


def bench_scale(n_lines: int, cache_size: int, repeat: int) -> None:
    """Each apply timing is the best of ``repeat`` runs (``best_of``)."""
    from addm_integration.addm.inputs import read_task
    from addm_integration.store.workspace import Workspace

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        template = tmp_path / "template"
        batch_id = _apply_workspace(template, n_lines)
        output = template / "data" / "batches" / batch_id / "output.jsonl"
        line(f"output file: {n_lines:,} lines", f"{output.stat().st_size / 1e6:.0f} MB")
        snapshot = Workspace(template).snapshot("job_bench")
        full_template = tmp_path / "full-template"
        shutil.copytree(template, full_template)
        _prefill(full_template / "data" / "answers" / "yelp" / "cache.json", cache_size)
        term_hash = read_task(template / "data" / "tasks" / "yelp" / "G1a.json").fingerprint
        bare_args = (str(output), str(tmp_path / "bare.json"), str(snapshot), term_hash)
        (bare, bare_rss), (empty, empty_rss), (full, full_rss) = best_of(
            repeat,
            {
                "bare": lambda: _child(_BARE_APPLY, *bare_args),
                "empty": _child_in_copy(template, tmp_path / "empty", _FETCH, batch_id, "applied"),
                "full": _child_in_copy(full_template, tmp_path / "full", _FETCH, batch_id, "applied"),
            },
        )
        ours = orjson.loads((tmp_path / "empty" / "data" / "answers" / "yelp" / "cache.json").read_bytes())
        if ours != orjson.loads((tmp_path / "bare.json").read_bytes()):
            raise SystemExit("the bare baseline and the apply wrote different judgments: the comparison is void")
        line("apply timings: best of", f"{repeat} runs each")
        line("bare baseline: parse the file, write the same judgments once", f"{bare:.2f} s, RSS {bare_rss:.0f} MB")
        line("apply into an empty cache", f"{empty:.2f} s, peak RSS {empty_rss:.0f} MB")
        line("  ratio to the bare baseline (goal <= 1.5)", f"{empty / bare:.2f}")
        line(f"apply into a cache of {cache_size:,} judgments", f"{full:.2f} s, peak RSS {full_rss:.0f} MB")
        line("  ratio full / empty (goal <= 2.0)", f"{full / empty:.2f}")
        line("  peak RSS goal < 200 MB: worst", f"{max(empty_rss, full_rss):.0f} MB")

        with FakeOpenAI(batch_delay=10**6) as server:
            env_file = template / ".env"
            env_file.write_text(f"OPENAI_API_KEY=sk-bench\nOPENAI_BASE_URL={server.base_url}\n")
            env_file.chmod(0o600)
            shutil.rmtree(template / "data" / "ledger")
            args = ["--root", str(template), "--task", "G1a", "--llm-mode", "24hrbatch", "--no-cron"]
            staged = tmp_path / "staged.jsonl"

            def submit() -> tuple[float, float]:
                for made in ("ledger", "batches"):
                    shutil.rmtree(template / "data" / made, ignore_errors=True)
                total, rss, sending = _child(_SUBMIT, *args)
                timings["sending"].append(sending)
                kept = sorted((template / "data" / "batches").glob("*/input.jsonl"))
                with staged.open("wb") as out_file:  # what it uploaded, for the bare upload of the same bytes
                    for path in kept:
                        out_file.write(path.read_bytes())
                return total, rss

            timings: dict[str, list[float]] = {"sending": []}
            submit()  # the staged file the bare upload sends, and a warm page cache for both sides
            (seconds, rss), (bare_upload, _) = best_of(
                repeat, {"submit": submit, "upload": lambda: _child(_BARE_UPLOAD, str(staged), server.base_url)}
            )
            sending = min(timings["sending"])
            reviews = sum(
                len(orjson.loads(x)["reviews"]) for x in (template / "data/context/yelp/dataset_K25.jsonl").open("rb")
            )
            n_batches = len(list((template / "data" / "batches").glob("*/input.jsonl")))
            line(
                f"submit of {reviews:,} requests (build, split, upload)",
                f"{seconds:.2f} s, {reviews / seconds:,.0f} requests/s, {n_batches} batch(es)",
            )
            line("  of which sending the staged parts (upload, create, record)", f"{sending:.2f} s")
            line(f"bare SDK upload of the same {staged.stat().st_size / 1e6:.0f} MB + create", f"{bare_upload:.2f} s")
            line("  sending / bare upload (goal <= 1.2)", f"{sending / bare_upload:.2f}")
            line(
                "  whole submit / bare upload (local server: building the requests dominates)",
                f"{seconds / bare_upload:.2f}",
            )
            line("  peak RSS of the submit", f"{rss:.0f} MB")

    bench_ondemand()


# What any reader of a batch's results must do at the least: parse every line and the answer inside it.
_BARE_PARSE = """
import sys, time, orjson
start = time.perf_counter()
n = 0
with open(sys.argv[1], "rb") as f:
    for raw in f:
        line = orjson.loads(raw)
        n += len(orjson.loads(line["response"]["body"]["choices"][0]["message"]["content"]))
print(time.perf_counter() - start, _peak_mb())
"""


# Less than any correct apply of a topic part can do: each line parsed and its answer kept twice, as a raw run
# and as its review's aggregate, with no check, no routing and no vote; the old cache copied in the kernel (and
# fsynced) while the lines are parsed, the new entries written after it, fsynced and renamed over it. The same
# number of entries and about the same bytes as the real apply writes: what the file system and orjson cost.
_TOPIC_FLOOR = """
import gc, os, sys, threading, time, orjson
gc.disable()
start = time.perf_counter()
cache = os.path.join(sys.argv[1], "data", "answers", "yelp", "judgement_cache.json")
output = os.path.join(sys.argv[1], "data", "batches", sys.argv[2], "output.jsonl")
size = os.path.getsize(cache)
with open(cache, "rb") as old, open(cache + ".tmp", "wb") as new:
    def copy():
        done = 0
        while done < size - 3:  # all but the closing brace and its newlines
            done += os.copy_file_range(old.fileno(), new.fileno(), size - 3 - done, done)
        os.fsync(new.fileno())
    copying = threading.Thread(target=copy)
    copying.start()
    raw, aggregated = {}, {}
    with open(output, "rb") as f:
        for line in f:
            line = orjson.loads(line)
            _, topic, _, review_id, model, run = line["custom_id"].split("::")
            answer = orjson.loads(line["response"]["body"]["choices"][0]["message"]["content"])
            raw[f"{topic}::{review_id}::{model}::{run}"] = {
                "review_id": review_id, **answer, "date": "2019-03-02 18:40:11", "stars": 4.0, "useful": 0,
                "_term_hash": "0123456789abcdef", "_model": model, "_run": 4, "_extracted_at": "2026-01-01T00:00:00",
            }
            aggregated[f"{topic}::{review_id}"] = {"review_id": review_id, **answer, "_confidence": answer}
    entries = orjson.dumps({"raw_new": raw, "aggregated_new": aggregated})
    copying.join()
    new.seek(0, os.SEEK_END)
    new.write(b",\\n" + entries[1:] + b"\\n")
    new.flush()
    os.fsync(new.fileno())
os.replace(cache + ".tmp", cache)
assert len(raw) == len(aggregated) == int(sys.argv[3])
print(time.perf_counter() - start, _peak_mb())
"""


def _topic_workspace(root: Path, n_reviews: int, runs: int) -> tuple[str, int]:
    """A topic job of 2 models x ``runs`` runs over ``n_reviews``: every part applied but the last, whose batch is
    completed with its files stored, so that a fetch applies it and aggregates the whole job."""
    import random

    from fake_openai import chat_completion

    from addm_integration.addm import topics
    from addm_integration.addm.extract import TopicExtract
    from addm_integration.addm.inputs import read_task
    from addm_integration.engine.pipeline import job_key
    from addm_integration.engine.plan import ids_digest
    from addm_integration.store.cache import JudgmentCache
    from addm_integration.store.context import Context

    generate(root, n_restaurants=n_reviews // 20 + 50, seed=9)
    task = orjson.loads((root / "data/tasks/yelp/G1a.json").read_bytes())
    topic = "G1_allergy"
    (root / "data/tasks/yelp" / f"{topic}.json").write_bytes(
        orjson.dumps({**task, "task_id": topic, "relevance_field": "is_relevant", "policies": [f"{topic}_V1"]})
    )
    sizes = [len(orjson.loads(r)["reviews"]) for r in (root / "data/context/yelp/dataset_K25.jsonl").open("rb")]
    limit = next(n for n in range(1, len(sizes) + 1) if sum(sizes[:n]) >= n_reviews)
    ctx = Context.open(root)
    quotas = topics.parse_models(f"gpt-5-mini:{runs},gpt-5-nano:{runs}")
    pipeline = TopicExtract(ctx, "", "yelp", 25, limit, "gpt-5-mini", topics=(topic,), quotas=quotas)
    definition = read_task(root / "data/tasks/yelp" / f"{topic}.json")
    batch_id, job_id, idem = "batch_topic", "job_topic", "job_topic-007"
    batch_dir = ctx.ws.batch_dir(batch_id)
    batch_dir.mkdir(parents=True)
    rng = random.Random(3)
    earlier: dict[tuple[str, int], dict[str, object]] = {}
    cache = JudgmentCache(ctx.ws.judgement_cache("yelp"))
    ids = []
    with open(batch_dir / "input.jsonl", "wb") as inp, open(batch_dir / "output.jsonl", "wb") as out:
        for n, item in enumerate(pipeline.work(job_id)):
            target = item.custom_id.split("::")
            review_id, model, run = target[3], target[4], int(target[5][3:])
            if (model, run) == ("gpt-5-nano", runs):  # the last part: a real answer per line, applied by the fetch
                raw = (
                    orjson.dumps(
                        {
                            "custom_id": item.custom_id,
                            "method": "POST",
                            "url": "/v1/chat/completions",
                            "body": item.body,
                        }
                    )
                    + b"\n"
                )
                ids.append(item.custom_id)
                inp.write(raw)
                _, body = chat_completion(dict(item.body))
                response = {"status_code": 200, "request_id": f"req_{n}", "body": body}
                line_out = {"id": f"br_{n}", "custom_id": item.custom_id, "response": response, "error": None}
                out.write(orjson.dumps(line_out) + b"\n")
                continue
            relevant = rng.random() < 0.3
            judgment: dict[str, object] = {"review_id": review_id, "is_relevant": relevant}
            if relevant:
                judgment.update({name: rng.choice(list(values)) for name, values in definition.fields.items()})
            judgment.update(
                {"date": "2019-03-02 18:40:11", "stars": 4.0, "useful": 0, "_term_hash": definition.fingerprint}
            )
            judgment.update({"_model": model, "_run": run, "_extracted_at": "2026-01-01T00:00:00+00:00"})
            earlier[(review_id, model, run)] = judgment  # type: ignore[index]
            if len(earlier) == 50_000:  # one merge per earlier part, as their applies did
                cache.merge(topics.RAW, {topics.raw_key(topic, r, m, k): j for (r, m, k), j in earlier.items()})
                earlier.clear()
    if earlier:
        cache.merge(topics.RAW, {topics.raw_key(topic, r, m, k): j for (r, m, k), j in earlier.items()})
    # the running tally as the earlier parts' applies would have left it
    tally = pipeline._count_stored(pipeline.reviews(job_id))
    ctx.ws.votes(job_id).write_bytes(orjson.dumps({t: v.tallies for t, v in tally.items()}))
    params = {"pipeline": pipeline.params(), "base_url": "http://127.0.0.1:9/v1", "cron": None, "max_attempts": 1}
    files = {"output": {"file_id": "file-o"}, "error": {"file_id": None}}
    n_last = len(ids)
    ctx.record(
        JobCreated(job_id, "extract", "24hrbatch", job_key(ctx, pipeline), params, n_last),
        PartPlanned(job_id, idem, n_last, 0, 1, str(batch_dir / "input.jsonl"), "gpt-5-nano", None, ids_digest(ids)),
        BatchCreated(job_id, idem, batch_id),
        BatchPolled(batch_id, "completed", {"total": n_last, "completed": n_last, "failed": 0}, (), Phase.FINISHED),
        FilesStored(batch_id, files),
    )
    return batch_id, n_last


def bench_topic(n_reviews: int, runs: int, repeat: int) -> None:
    """The last part of a topic job applied, then the whole job aggregated, against the bare parse of that part."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        template = tmp_path / "template"
        batch_id, n_last = _topic_workspace(template, n_reviews, runs)
        output = template / "data" / "batches" / batch_id / "output.jsonl"
        cache = template / "data" / "answers" / "yelp" / "judgement_cache.json"
        line(f"topic job: 2 models x {runs} runs of {n_last:,} reviews", f"{2 * runs * n_last:,} requests")
        line("  judgement cache before the last part", f"{cache.stat().st_size / 1e6:.0f} MB")
        line(f"  last part's output: {n_last:,} lines", f"{output.stat().st_size / 1e6:.0f} MB")
        (b, b_rss), (f, _), (o, o_rss) = best_of(
            repeat,
            {
                "bare": lambda: _child(_BARE_PARSE, str(output)),
                "floor": _child_in_copy(template, tmp_path / "floor", _TOPIC_FLOOR, batch_id, str(n_last)),
                "ours": _child_in_copy(template, tmp_path / "run", _FETCH, batch_id, "aggregated"),
            },
        )
        done = orjson.loads((tmp_path / "run" / "data/answers/yelp/judgement_cache.json").read_bytes())
        if len(done["aggregated"]) != n_last or len(done["raw"]) != 2 * runs * n_last:
            raise SystemExit("the fetch did not apply and aggregate the whole job: the comparison is void")
        line("timings: best of", f"{repeat} runs each")
        line("bare parse of the last part's output", f"{b:.2f} s, RSS {b_rss:.0f} MB")
        line("apply of the last part + aggregate of the job", f"{o:.2f} s, peak RSS {o_rss:.0f} MB")
        line("  ratio to the bare parse (goal <= 2.5)", f"{o / b:.2f}")
        line("floor: no check, no vote, the same entries written", f"{f:.2f} s, {f / b:.2f}x the bare parse")
        line("  ratio to the floor", f"{o / f:.2f}")
        line("  peak RSS goal < 250 MB", f"{o_rss:.0f} MB")


_BARE_LOOP = """
import asyncio, sys, time, orjson
from openai import AsyncOpenAI
bodies = [orjson.loads(l)["body"] for l in open(sys.argv[2], "rb")]
async def main():
    api = AsyncOpenAI(api_key="sk-bench", base_url=sys.argv[1])
    gate = asyncio.Semaphore(32)
    async def one(body):
        async with gate:
            await api.chat.completions.create(**body)
    await asyncio.gather(*(one(b) for b in bodies))
asyncio.run(main())
"""


def bench_ondemand(n_reviews: int = 2000, latency_ms: int = 50, concurrency: int = 32, cache: int = 0) -> None:
    """Ondemand against the bare loop; with ``cache`` judgments already in the cache, each apply rewrites it all."""
    from addm_integration.addm.extract import Extract
    from addm_integration.engine.plan import batch_lines
    from addm_integration.provider.openai_api import request_line
    from addm_integration.store.context import Context

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ws"
        generate(root, n_restaurants=110, seed=4)
        if cache:
            _prefill(root / "data" / "answers" / "yelp" / "cache.json", cache)
            os.sync()  # the prefill's dirty pages must not land inside the measured run
        url_file = Path(tmp) / "url"
        server = subprocess.Popen(
            [
                sys.executable,
                str(HERE / "fake_openai.py"),
                "--latency-ms",
                str(latency_ms),
                "--url-file",
                str(url_file),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            while not url_file.exists():
                time.sleep(0.05)
            url = url_file.read_text().strip()
            pipeline = Extract(Context.open(root), "G1a")
            sizes = [len(orjson.loads(r)["reviews"]) for r in (root / "data/context/yelp/dataset_K25.jsonl").open("rb")]
            limit = next(n for n in range(1, len(sizes) + 1) if sum(sizes[:n]) >= n_reviews)
            count = sum(sizes[:limit])
            pipeline.limit = limit
            requests = Path(tmp) / "requests.jsonl"
            requests.write_bytes(b"".join(raw for _, raw, _ in batch_lines(pipeline.work(None), request_line)))
            env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
            # Both timed as whole processes (interpreter, imports, reading the requests, the calls).
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", _BARE_LOOP, url, str(requests)], env=env, check=True)
            bare = count / (time.perf_counter() - start)
            env.update(OPENAI_API_KEY="sk-bench", OPENAI_BASE_URL=url)
            start = time.perf_counter()
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "addm_integration.extract",
                    "--root",
                    str(root),
                    "--task",
                    "G1a",
                    "--limit",
                    str(limit),
                    "--concurrency",
                    str(concurrency),
                ],
                env=env,
                capture_output=True,
                text=True,
            )
            ours = count / (time.perf_counter() - start)
            if done.returncode != 0:
                raise SystemExit(f"the ondemand run failed ({done.returncode}): {done.stderr.strip()}")
        finally:
            server.terminate()
            server.wait()
        bound = concurrency / (latency_ms / 1000)
        line(
            f"ondemand: {count:,} reviews, {latency_ms} ms latency, concurrency {concurrency}",
            f"{ours:,.0f} requests/s",
        )
        if cache:
            line(f"  into a cache of {cache:,} judgments", "")
        line("  bare AsyncOpenAI loop, same requests, nothing stored", f"{bare:,.0f} requests/s")
        line("  ratio to the bare loop (goal >= 0.9)", f"{ours / bare:.2f}")
        line(f"  ratio to the latency bound ({bound:,.0f}/s)", f"{ours / bound:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ledger")
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--only", choices=("fetch", "audit"), help="only the appends and no-op fetch, or only the audit")
    p = sub.add_parser("scale")
    p.add_argument("--lines", type=int, default=50_000)
    p.add_argument("--cache", type=int, default=1_000_000)
    p.add_argument("--repeat", type=int, default=5, help="apply timings are the best of this many runs")
    p = sub.add_parser("ondemand")
    p.add_argument("--cache", type=int, default=1_000_000, help="judgments in the cache before the run")
    p = sub.add_parser("topic")
    p.add_argument("--reviews", type=int, default=50_000)
    p.add_argument("--runs", type=int, default=4, help="runs of each of the two models")
    p.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"bench {args.what} on {os.cpu_count()} cores, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    if args.what == "ledger":
        if args.only != "audit":
            bench_ledger(args.events)
        if args.only != "fetch":
            bench_audit_history()
    elif args.what == "ondemand":
        bench_ondemand(cache=args.cache)
    elif args.what == "topic":
        bench_topic(args.reviews, args.runs, args.repeat)
    else:
        bench_scale(args.lines, args.cache, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
