"""``addm-import`` (``python -m addm_integration.importer``): its arguments; the import is in app/importer.py."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path

from addm_integration import errors
from addm_integration.app.importer import run_import
from addm_integration.errors import BadInput
from addm_integration.store.workspace import Workspace
from ledger import failures


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="addm-import",
        description=(
            "Turn an ADDM checkout's own files into a workspace: task prompts (their\n"
            '"L0: Primitives" section) into task definitions, policy YAML files into\n'
            "policy definitions (their verdict labels, scoring), agendas (per K, or one\n"
            "for every K), ground truth, upstream's output-schema system prompt, and\n"
            "the datasets (linked, or copied across file systems). A file that already\n"
            "holds the same content is left alone; one that differs is kept unless\n"
            "--force. What could not be used is listed with the reason."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Exit codes: 0 done, 2 bad input (nothing written). Guide: README.md.",
    )
    p.add_argument("checkout", metavar="DIR", help="the ADDM checkout (a clone of upstream's repository)")
    p.add_argument("--root", help="workspace to write (env ADDM_ROOT, default: the current directory)")
    p.add_argument("--domain", default="yelp", help="default: yelp")
    p.add_argument("--force", action="store_true", help="replace files that differ from the checkout's")
    p.add_argument("--version", action="version", version=f"%(prog)s {metadata.version('addm-batch')}")
    args = p.parse_args(argv)
    root = Path(args.root or os.environ.get("ADDM_ROOT") or ".").resolve()
    try:
        lines = run_import(Path(args.checkout).resolve(), root, args.domain, args.force)
    except KeyboardInterrupt:
        print(
            "addm-import: interrupted; run the same command again: what is in place is left as it is", file=sys.stderr
        )
        return 130
    except Exception as exc:
        return failures.report("addm-import", exc, Workspace(root).logs_dir, translate=_translate)
    print("\n".join(lines))
    return 0


def _translate(exc: BaseException) -> failures.Translation | None:
    """The one translation, where a file of the checkout that cannot be read is the user's to fix (exit 2)."""
    known = errors.translate(exc)
    if known is None and isinstance(exc, OSError) and exc.filename:
        return BadInput.exit_code, f"{exc.filename}: {exc.strerror or exc}"
    return known


if __name__ == "__main__":
    sys.exit(main())
