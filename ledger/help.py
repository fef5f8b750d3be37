"""What every command's ``--help`` and ``--version`` share: one wrap width, paragraphs kept, examples verbatim.

A help text is read on an 80-column terminal as often as not, and a wide one still reads better narrow; so every
command wraps at one width, whatever the terminal, instead of argparse's guess per section.
"""

from __future__ import annotations

import argparse
import textwrap
from importlib import metadata

WIDTH = 79  # one column spare: a line of exactly 80 makes some terminals wrap the cursor onto the next line
DISTRIBUTION = "addm-batch"


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Paragraphs (split at blank lines) are filled to WIDTH; a line starting with a space or ``$`` is an example
    or a list item and is kept as written."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 26, width: int | None = None):
        super().__init__(prog, indent_increment, max_help_position, width=WIDTH)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        out: list[str] = []
        for paragraph in text.strip("\n").split("\n\n"):
            lines = paragraph.splitlines()
            if any(line.startswith((" ", "$")) for line in lines):
                out.append("\n".join(indent + line for line in lines))
            else:
                out.append(fill(" ".join(lines), indent, indent))
        return "\n\n".join(out)


def fill(text: str, initial_indent: str = "", subsequent_indent: str = "") -> str:
    """Words filled to WIDTH; an id, a path or a command is never cut, at a hyphen or anywhere else, so that it
    can be copied whole from the screen."""
    return textwrap.fill(
        text,
        WIDTH,
        initial_indent=initial_indent,
        subsequent_indent=subsequent_indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def add_version(parser: argparse.ArgumentParser, prog: str) -> None:
    parser.add_argument("--version", action="version", version=f"{prog} {version()}", help="print the version and exit")
