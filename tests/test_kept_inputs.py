"""Both pipelines keep their inputs one way: a snapshot written with the first item a job sends, applied from
whatever happens to the dataset since; snapshots written by earlier versions under their own names still count."""

from __future__ import annotations

from pathlib import Path

import pytest
from gen_data import generate

from addm_integration.addm.extract import Extract
from addm_integration.addm.run_baseline import Baseline
from addm_integration.engine.pipeline import Pipeline
from addm_integration.errors import DamagedFile
from addm_integration.store.context import Context

EARLIER_NAMES = {"extract": "reviews", "run_baseline": "baseline"}


def _ctx(tmp_path: Path) -> Context:
    generate(tmp_path, n_restaurants=3, seed=5)
    return Context.open(tmp_path)


def _pipeline(ctx: Context, name: str) -> Pipeline:
    return Extract(ctx, "G1a") if name == "extract" else Baseline(ctx, "G1_allergy_V2")


def _inputs(pipeline: Pipeline, job_id: str) -> object:
    return pipeline.reviews(job_id) if isinstance(pipeline, Extract) else pipeline.sent(job_id)


@pytest.mark.parametrize("name", ["extract", "run_baseline"])
def test_a_job_applies_from_the_inputs_it_was_submitted_with(tmp_path: Path, name: str) -> None:
    ctx = _ctx(tmp_path)
    assert list(_pipeline(ctx, name).work(None)) and not ctx.ws.runs_dir.exists()  # a rehearsal writes nothing
    items = list(_pipeline(ctx, name).work("job_a"))
    assert items and (ctx.ws.runs_dir / "job_a.inputs.json").is_file()
    submitted = _inputs(_pipeline(ctx, name), "job_a")
    ctx.ws.dataset("yelp", 25).write_text("")  # the dataset emptied after the submit
    assert _inputs(_pipeline(ctx, name), "job_a") == submitted


@pytest.mark.parametrize("name", ["extract", "run_baseline"])
def test_a_snapshot_an_earlier_version_wrote_is_still_used(tmp_path: Path, name: str) -> None:
    ctx = _ctx(tmp_path)
    list(_pipeline(ctx, name).work("job_a"))
    submitted = _inputs(_pipeline(ctx, name), "job_a")
    ctx.ws.snapshot("job_a").rename(ctx.ws.runs_dir / f"job_a.{EARLIER_NAMES[name]}.json")
    ctx.ws.dataset("yelp", 25).write_text("")
    assert _inputs(_pipeline(ctx, name), "job_a") == submitted


def test_a_damaged_snapshot_is_named_and_never_read_as_input(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path)
    list(_pipeline(ctx, "run_baseline").work("job_a"))
    ctx.ws.snapshot("job_a").write_bytes(b'{"policy": ')
    with pytest.raises(DamagedFile, match=r"job_a\.inputs\.json: the snapshot of the job's inputs is damaged"):
        _inputs(_pipeline(ctx, "run_baseline"), "job_a")
