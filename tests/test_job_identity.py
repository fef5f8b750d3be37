"""A job's identity is derived from its params in one place, and jobs recorded by earlier versions under their
hand-formatted keys are still found: continued, never started again and paid twice."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from conftest import KEY, Workspace, submit_args

from addm_integration import extract, run_baseline
from addm_integration.addm import topics
from addm_integration.addm.extract import Extract, TopicExtract
from addm_integration.addm.run_baseline import Baseline
from addm_integration.engine.pipeline import Pipeline, canonical_key, job_key
from addm_integration.store.context import Context
from ledger.events import JobCreated

POLICY = "G1_allergy_V2"


def _pipelines(ctx: Context) -> list[Pipeline]:
    quotas = topics.parse_models("gpt-5-mini:1:2,gpt-5-nano:3:1")
    return [
        Extract(ctx, "G1a", "yelp", 25, 3, "gpt-5-nano"),
        TopicExtract(ctx, "", "yelp", 25, None, "gpt-5-mini", topics=("G1_allergy",), quotas=quotas),
        Baseline(ctx, POLICY, "yelp", 25, 4, 1, "gpt-5-nano", dev=True),
    ]


@pytest.mark.parametrize("which", range(3), ids=["extract", "topics", "run_baseline"])
def test_a_job_recorded_under_its_old_key_keeps_that_key(tmp_path: Path, which: int) -> None:
    ctx = Context.open(tmp_path)
    pipeline = _pipelines(ctx)[which]
    old = pipeline.key_before(pipeline.params())
    assert old is not None and job_key(ctx, pipeline) != old  # a new workspace gets the derived key
    ctx.record(JobCreated("job_old", pipeline.name, "24hrbatch", old, {"pipeline": pipeline.params()}, 5))
    assert job_key(ctx, pipeline) == old
    assert ctx.open_job(job_key(ctx, pipeline), "24hrbatch").job_id == "job_old"  # type: ignore[union-attr]


def test_an_old_key_never_merges_jobs_whose_params_differ(tmp_path: Path) -> None:
    """A param the old format did not show: the recorded job asked something else, under the same old key."""
    ctx = Context.open(tmp_path)
    pipeline = Extract(ctx, "G1a", "yelp", 25, 3, "gpt-5-nano")
    old = pipeline.key_before(pipeline.params())
    other = {**pipeline.params(), "reasoning_effort": "high"}
    ctx.record(JobCreated("job_old", "extract", "24hrbatch", old, {"pipeline": other}, 5))  # type: ignore[arg-type]
    assert job_key(ctx, pipeline) == canonical_key("extract", pipeline.params())
    assert ctx.open_job(job_key(ctx, pipeline), "24hrbatch") is None


def test_every_param_is_in_the_key_but_where_results_go(tmp_path: Path) -> None:
    ctx = Context.open(tmp_path)
    for pipeline in _pipelines(ctx):
        params = pipeline.params()
        key = canonical_key(pipeline.name, params, pipeline.unkeyed)
        for name in params:
            changed = canonical_key(pipeline.name, {**params, name: ["changed"]}, pipeline.unkeyed)
            assert (changed == key) == (name in pipeline.unkeyed), name
    assert Baseline.unkeyed == {"run_dir"}  # a dev run's folder carries its creation time


@pytest.mark.parametrize("tool", ["extract", "run_baseline"])
def test_the_same_submit_continues_a_job_an_earlier_version_submitted(
    ws: Workspace, tool: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The earlier version is played by recording its hand-formatted key; the second submit runs this one."""
    main, args = (extract.main, ["--task", "G1a"]) if tool == "extract" else (run_baseline.main, ["--policy", POLICY])
    command = ["--root", str(ws.root), *args, *submit_args(ws)]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", ws.server.base_url)
    with monkeypatch.context() as earlier:
        earlier.setattr("addm_integration.engine.submit.job_key", lambda ctx, p: p.key_before(p.params()))
        assert main(command) == 0, capsys.readouterr().err
    (created,) = [r.event for r in Context.open(ws.root).ledger.records() if isinstance(r.event, JobCreated)]
    assert "|K25|" in created.key  # the old format indeed
    assert main(command) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"job {created.job_id} was already submitted" in out and "nothing was sent twice" in out
    assert len(ws.server.batch_ids()) == 1
    jobs = [r.event for r in Context.open(ws.root).ledger.records() if isinstance(r.event, JobCreated)]
    assert len(jobs) == 1
    # and its cron run, which locks the key the job recorded, applies and finalizes it as before
    (batch,) = ws.batches()
    ws.server.set_batch_outcome(batch, "completed")
    assert main([*command, "--batch-id", batch]) == 0
    assert ws.cron_lines() == {}
    state = Context.open(ws.root).state()
    assert state.jobs[created.job_id].finalized
    if tool == "extract":
        assert len(orjson.loads(ws.cache.read_bytes())["G1a"]) > 0
