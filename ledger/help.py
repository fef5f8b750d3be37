"""What every command's ``--help`` and ``--version`` share: one wrap width, paragraphs kept, examples verbatim.

A help text is read on an 80-column terminal as often as not, and a wide one still reads better narrow; so every
command wraps at one width, whatever the terminal, instead of argparse's guess per section.
"""

from __future__ import annotations

import argparse
import textwrap
from importlib import metadata

WIDTH = 79  # one column spare: a line of exactly 80 makes some terminals wrap the cursor onto the next line


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
    """The version of the installed distribution that ships this package, whatever it is named: the package
    knows nothing of what it is shipped in. Looked up only when asked (it scans the installed distributions)."""
    package = __name__.partition(".")[0]
    try:
        return metadata.version(metadata.packages_distributions()[package][0])
    except (KeyError, IndexError, metadata.PackageNotFoundError):  # run from a checkout that was never installed
        return "unknown (not installed)"


class _Version(argparse.Action):
    """``--version``, its text made only when it is asked for."""

    def __init__(self, option_strings: list[str], dest: str, prog: str, help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, help=help)
        self.prog = prog

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"{self.prog} {version()}")
        parser.exit()


def add_version(parser: argparse.ArgumentParser, prog: str) -> None:
    parser.add_argument("--version", action=_Version, prog=prog, help="print the version and exit")
