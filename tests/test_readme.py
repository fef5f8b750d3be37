"""README's walkthrough, run line by line in a fresh workspace, works as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _walkthrough() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Walkthrough", 1)[1]
    match = re.search(r"```sh\n(.*?)```", section, re.DOTALL)
    assert match, "README has no walkthrough code block"
    return match.group(1)


def test_readme_walkthrough_runs_as_written() -> None:
    script = _walkthrough()
    result = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "dry run, nothing sent" in out
    assert "reviews judged" in out and "accuracy" in out
    assert "re-applied" in out
    assert "no problems found" in out
    assert "records, sound" in out


def _user_docs() -> dict[Path, str]:
    return {p: p.read_text() for p in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}


def test_every_link_of_the_readme_and_docs_leads_to_a_file_of_the_repository() -> None:
    links = 0
    for path, text in _user_docs().items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            links += 1
            assert not re.match(r"[a-z]+:", target), f"{path.name}: {target} leaves the repository"
            file = (path.parent / target.split("#", 1)[0]).resolve()
            assert file.is_relative_to(REPO) and file.exists(), f"{path.name}: {target} is not in the repository"
    assert links >= 5


def test_nothing_a_user_or_a_reader_of_the_code_sees_points_outside_the_repository() -> None:
    sources = [p for d in ("ledger", "addm_integration", "scripts", "tests") for p in (REPO / d).rglob("*.py")]
    texts = {**_user_docs(), **{p: p.read_text() for p in sources if p.name != "test_readme.py"}}
    for path, text in texts.items():
        for needle in ("CONTRACT", "../shared", "/work/", "§"):
            assert needle not in text, f"{path.relative_to(REPO)} mentions {needle!r}"
