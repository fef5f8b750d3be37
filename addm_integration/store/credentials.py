"""Where the key and base URL come from: the environment, else ``<root>/.env`` (what a cron run has).

The key is only ever held in memory and handed to the SDK; nothing here formats it into a message.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from dotenv import dotenv_values

from addm_integration.errors import BadInput

KEY = "OPENAI_API_KEY"
BASE_URL = "OPENAI_BASE_URL"
DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class Credentials:
    api_key: str | None
    base_url: str

    def __repr__(self) -> str:  # never let the key reach a log through a repr
        return f"Credentials(api_key={'set' if self.api_key else 'missing'}, base_url={self.base_url!r})"


def read_env_file(path: Path) -> dict[str, str]:
    """The values of a dotenv file, refusing one that group or others can read (it holds a secret)."""
    if not path.exists():
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise BadInput(f"{path} is readable by group or others; run: chmod 600 {path}")
    try:
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read: {exc.__class__.__name__}") from None
    return {k: v for k, v in values.items() if v is not None}


def resolve(root: Path, *, base_url: str | None = None) -> Credentials:
    """Environment first, then ``<root>/.env``; ``base_url`` (the one a job was submitted to) wins when given."""
    key = os.environ.get(KEY) or None
    url = os.environ.get(BASE_URL) or None
    if key is None or url is None:
        values = read_env_file(root / ".env")
        key = key or values.get(KEY) or None
        url = url or values.get(BASE_URL) or None
    return Credentials(key, base_url or url or DEFAULT_BASE_URL)


def env_file_has_key(root: Path) -> bool:
    return bool(read_env_file(root / ".env").get(KEY))


def known_secret(root: Path) -> str | None:
    """The key, wherever it is, to scrub it from what a failure prints or saves; never raises."""
    try:
        return resolve(root).api_key
    except Exception:
        return os.environ.get(KEY) or None
