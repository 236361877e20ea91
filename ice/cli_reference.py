"""docs/cli.md, written from `ice`'s own parsers, so that the reference cannot drift from the
options: `python -m ice.cli_reference` rewrites it, and a test checks that it is current."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli import build_parser

DOC = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
WIDTH = 100  # the help text's line width, fixed so that the page does not depend on a terminal


def reference() -> str:
    """The Markdown page: `ice --help`, then each command's --help, in a code block each."""
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps at the terminal's width otherwise
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    parts = [
        "# Command-line reference",
        "",
        "Written from the parsers by `python -m ice.cli_reference`; do not edit by hand.",
        "",
        "```text",
        parser.format_help().rstrip(),
        "```",
    ]
    for name, sub in commands.choices.items():
        parts += ["", f"## ice {name}", "", "```text", sub.format_help().rstrip(), "```"]
    return "\n".join(parts) + "\n"


def main() -> int:
    DOC.write_text(reference())
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
