"""The judgment cache: merges behave like dict updates, the file stays plain JSON, a kill leaves old or new."""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from addm_integration.store.cache import JudgmentCache

KEYS = st.text(min_size=0, max_size=6)
MERGES = st.lists(
    st.tuples(st.sampled_from(["G1a", "G2", 'odd"task']), st.dictionaries(KEYS, st.integers(-1000, 1000), min_size=1)),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(MERGES)
def test_merges_equal_dict_updates_for_any_keys(merges: list[tuple[str, dict[str, int]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = JudgmentCache(Path(tmp) / "cache.json")
        expected: dict[str, dict[str, int]] = {}
        for task, entries in merges:
            cache.merge(task, entries)
            expected.setdefault(task, {}).update(entries)
            assert orjson.loads(cache.path.read_bytes()) == expected
            assert cache.present(task, [*expected[task], "absent", ""]) == set(expected[task])


BLOCKS = st.sampled_from(["raw", "aggregated", "_metadata", 'odd"task'])


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.dictionaries(BLOCKS, st.dictionaries(KEYS, st.integers(-9, 9), min_size=1), min_size=1),
        min_size=1,
        max_size=5,
    )
)
def test_a_merge_of_several_blocks_equals_a_dict_update_of_each(merges: list[dict[str, dict[str, int]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cache = JudgmentCache(Path(tmp) / "judgement_cache.json")
        expected: dict[str, dict[str, int]] = {}
        for blocks in merges:
            cache.merge_many(blocks)
            for task, entries in blocks.items():
                expected.setdefault(task, {}).update(entries)
            assert orjson.loads(cache.path.read_bytes()) == expected
            for task, entries in expected.items():
                assert cache.present(task, [*entries, "absent"]) == set(entries)
                assert sorted(_keys_in_file(cache.path, task)) == sorted(entries)  # a replaced key written once


_KILLED_AFTER_THE_RENAME = """
import os, signal, sys
from pathlib import Path
from addm_integration.store.cache import JudgmentCache
rename = os.replace
def replace_then_die(src, dst):
    rename(src, dst)
    if str(dst) == sys.argv[1]:  # the cache itself, before its key list is brought up to date
        os.kill(os.getpid(), signal.SIGKILL)
os.replace = replace_then_die
JudgmentCache(Path(sys.argv[1])).merge_many({"raw": {"r1::run1": 1}, "aggregated": {"r0": 5, "r1": 1}, "_m": {"t": 2}})
"""


def test_a_kill_after_a_merge_of_several_blocks_is_written_leaves_all_of_them_merged(tmp_path: Path) -> None:
    cache = JudgmentCache(tmp_path / "judgement_cache.json")
    cache.merge_many({"raw": {"r0::run1": 0}, "aggregated": {"r0": 0}, "_m": {"t": 0}})
    killed = subprocess.run([sys.executable, "-c", _KILLED_AFTER_THE_RENAME, str(cache.path)])
    assert killed.returncode == -signal.SIGKILL
    assert cache.read() == {"raw": {"r0::run1": 0, "r1::run1": 1}, "aggregated": {"r0": 5, "r1": 1}, "_m": {"t": 2}}
    assert cache.present("aggregated", ["r0", "r1", "r2"]) == {"r0", "r1"}  # the stale key list is not trusted
    cache.merge_many({"aggregated": {"r1": 3}, "raw": {"r2::run1": 2}})
    assert sorted(_keys_in_file(cache.path, "aggregated")) == ["r0", "r1"]
    assert cache.read()["aggregated"] == {"r0": 5, "r1": 3} and len(cache.read()["raw"]) == 3


def test_a_cache_in_another_layout_is_read_once_and_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    path.write_text('{"G1a": {"r1": {"is_relevant": false}}, "G2": {}}')
    cache = JudgmentCache(path)
    assert cache.present("G1a", ["r1", "r2"]) == {"r1"}
    cache.merge("G1a", {"r2": {"is_relevant": True}})
    assert cache.read() == {"G1a": {"r1": {"is_relevant": False}, "r2": {"is_relevant": True}}}
    assert path.read_bytes().startswith(b"{\n")


_MERGER = """
import sys
from pathlib import Path
from addm_integration.store.cache import JudgmentCache
cache = JudgmentCache(Path(sys.argv[1]))
print("go", flush=True)
for round_ in range(1000):
    cache.merge("G1a", {f"r{round_}-{i}": {"n": i, "pad": "x" * 200} for i in range(20000)})
"""


def test_a_kill_during_merges_leaves_a_complete_cache(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    for delay in (0.3, 0.7, 1.1):
        proc = subprocess.Popen([sys.executable, "-c", _MERGER, str(path)], stdout=subprocess.PIPE)
        assert proc.stdout is not None and proc.stdout.readline() == b"go\n"
        time.sleep(delay)  # choosing the instant of the kill, not waiting for an outcome
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        data = orjson.loads(path.read_bytes()) if path.exists() else {"G1a": {}}
        assert all(len([k for k in data["G1a"] if k.startswith(f"r{n}-")]) in (0, 20000) for n in range(50))


_WRITER = """
import sys
from pathlib import Path
from addm_integration.store.cache import JudgmentCache
cache = JudgmentCache(Path(sys.argv[1]))
for i in range(40):
    cache.merge(sys.argv[2], {f"{sys.argv[2]}-{i}": i})
"""


def test_concurrent_merges_of_different_tasks_lose_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), f"T{n}"]) for n in range(4)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    data = orjson.loads(path.read_bytes())
    assert {task: len(entries) for task, entries in data.items()} == {f"T{n}": 40 for n in range(4)}


def _keys_in_file(path: Path, task: str) -> list[str]:
    """Every key as written in the task's block, duplicates included (a dict would hide them)."""
    block = path.read_bytes().split(orjson.dumps(task) + b":{\n", 1)[1].split(b"\n}", 1)[0]
    return [k for line in block.split(b"\n") for k in orjson.loads(b"{" + line.rstrip(b",") + b"}")]


def test_a_cache_edited_by_another_tool_is_not_trusted_to_its_old_key_list(tmp_path: Path) -> None:
    cache = JudgmentCache(tmp_path / "cache.json")
    cache.merge("G1a", {"r1": 1})
    edited = cache.path.read_bytes().replace(b'"r1":1', b'"r1":1,"r2":2')  # same layout, one key more
    cache.path.write_bytes(edited)
    assert cache.present("G1a", ["r1", "r2", "r3"]) == {"r1", "r2"}
    cache.merge("G1a", {"r2": 20, "r3": 3})
    assert sorted(_keys_in_file(cache.path, "G1a")) == ["r1", "r2", "r3"]
    assert cache.read() == {"G1a": {"r1": 1, "r2": 20, "r3": 3}}


def test_a_torn_key_list_is_rebuilt_and_merges_stay_exact(tmp_path: Path) -> None:
    cache = JudgmentCache(tmp_path / "cache.json")
    cache.merge("G1a", {"r1": 1, "r2": 2})
    cache.merge("G1a", {"r3": 3})
    keys = cache.keys_path.read_bytes()
    cache.keys_path.write_bytes(keys[: len(keys) // 2])  # a crash in the middle of an append
    cache.merge("G1a", {"r2": 22, "r4": 4})
    assert sorted(_keys_in_file(cache.path, "G1a")) == ["r1", "r2", "r3", "r4"]
    assert cache.present("G1a", ["r1", "r2", "r3", "r4", "r5"]) == {"r1", "r2", "r3", "r4"}
    assert cache.read()["G1a"]["r2"] == 22


def test_a_cache_written_one_entry_per_line_by_the_previous_release_is_merged_in_place(tmp_path: Path) -> None:
    def block(task: str, n: int) -> bytes:
        lines = b",\n".join(orjson.dumps(f"{task}-{i}") + b":" + orjson.dumps({"n": i}) for i in range(n))
        return orjson.dumps(task) + b":{\n" + lines + b"\n}"

    path = tmp_path / "cache.json"
    path.write_bytes(b"{\n" + block("G1a", 500) + b",\n" + block("G2", 300) + b"\n}\n")
    cache = JudgmentCache(path)
    assert cache.present("G2", ["G2-299", "G2-300"]) == {"G2-299"}
    cache.merge("G1a", {"G1a-499": {"n": -1}, "G1a-500": {"n": 500}})
    cache.merge("G2", {"G2-300": {"n": 300}})
    data = cache.read()
    assert len(data["G1a"]) == 501 and data["G1a"]["G1a-499"] == {"n": -1} and len(data["G2"]) == 301
    assert sorted(_keys_in_file(path, "G1a")) == sorted(data["G1a"])
    assert cache.present("G1a", ["G1a-0", "G1a-500", "nope"]) == {"G1a-0", "G1a-500"}
