"""A workspace's own id, carried in the metadata of every batch it sends.

Several workspaces share one account and one crontab; the id is how a workspace tells its own batches on the
server from another's, whatever folder either lives in. It is made once, at the first submit, and kept in the
ledger's folder, so a workspace that is moved keeps it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from addm_integration.store.workspace import Workspace, atomic_write


def _path(ws: Workspace) -> Path:
    return ws.ledger_dir / "workspace_id"


def workspace_id(ws: Workspace) -> str | None:
    """The id of the workspace, None while it has none (nothing was ever sent from it)."""
    path = _path(ws)
    return path.read_text().strip() if path.exists() else None


def ensure_workspace_id(ws: Workspace) -> str:
    """The id of the workspace, made now if it has none.

    Two first submits at once agree: the id is written aside and linked into place, and the loser reads the
    winner's.
    """
    path = _path(ws)
    if not path.exists():
        aside = path.with_name(f".workspace_id.{secrets.token_hex(4)}")
        atomic_write(aside, f"ws_{secrets.token_hex(8)}\n".encode())
        try:
            os.link(aside, path)
        except FileExistsError:
            pass
        finally:
            aside.unlink(missing_ok=True)
    return path.read_text().strip()
