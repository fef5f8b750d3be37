"""Shared fixtures: the local OpenAI-compatible server on 127.0.0.1, a synthetic workspace, and ways to run the
commands as a user and as cron would (real subprocesses, a real tab file, ``/bin/sh`` under a bare environment).

``scripts/`` is put on sys.path so tests can import the server and the generator.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from crontab import CronTab

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from fake_openai import FakeOpenAI
from gen_data import generate

KEY = "sk-test-secret-9f3b2c7d1e"
MODULES = {
    "extract": "addm_integration.extract",
    "baseline": "addm_integration.run_baseline",
    "ledger": "addm_integration.ledger",
}


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    """A server whose batches stay in validating until a test says how they end (no waiting on time)."""
    with FakeOpenAI(batch_delay=3600, api_key=KEY) as fake:
        yield fake


@dataclass
class Workspace:
    root: Path
    server: FakeOpenAI

    @property
    def tab(self) -> Path:
        return self.root / "crontab"

    @property
    def cache(self) -> Path:
        return self.root / "data" / "answers" / "yelp" / "cache.json"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "ADDM_"))}
        return {**env, **extra}

    def run(self, tool: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command as a user would, as a real process (the key comes from the workspace's .env)."""
        argv = [sys.executable, "-m", MODULES[tool], "--root", str(self.root), *args]
        return subprocess.run(argv, env=env or self.env(), capture_output=True, text=True, timeout=120)

    def cron_lines(self) -> dict[str, str]:
        """marker -> command of every ADDM entry of the tab file."""
        if not self.tab.exists():
            return {}
        return {j.comment: j.command for j in CronTab(tabfile=str(self.tab)) if j.comment.startswith("ADDM_BATCH_")}

    def run_cron_line(self, command: str) -> subprocess.CompletedProcess[str]:
        """What cron does with an entry: /bin/sh, cron's bare environment, from another directory."""
        bare = ["env", "-i", f"HOME={self.root}", "LOGNAME=cron", "SHELL=/bin/sh", "PATH=/usr/bin:/bin"]
        return subprocess.run([*bare, "/bin/sh", "-c", command], capture_output=True, text=True, cwd="/", timeout=120)

    def batches(self) -> list[str]:
        return [b.removeprefix("ADDM_BATCH_") for b in self.cron_lines()]

    def ledger_json(self, *args: str) -> object:
        result = self.run("ledger", *args, "--json")
        assert result.returncode == 0, result.stderr
        return orjson.loads(result.stdout)

    def files(self) -> dict[str, bytes]:
        """Every file under the root with its bytes, to prove a run changed nothing."""
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


@pytest.fixture
def ws(tmp_path: Path, server: FakeOpenAI) -> Workspace:
    """Six restaurants of synthetic data and a .env (mode 600) holding the key and the server's URL."""
    root = tmp_path / "ws"
    generate(root, n_restaurants=6, seed=11)
    env_file = root / ".env"
    env_file.write_text(f"OPENAI_API_KEY={KEY}\nOPENAI_BASE_URL={server.base_url}\n")
    env_file.chmod(0o600)
    return Workspace(root, server)


def submit_args(ws: Workspace, *extra: str) -> Sequence[str]:
    return ("--llm-mode", "24hrbatch", "--crontab-file", str(ws.tab), *extra)
