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
