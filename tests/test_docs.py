"""The docs that are written from the code are current."""

from __future__ import annotations

import argparse
import re
import sys

from ice.cli import build_parser
from ice.cli_reference import DOC, reference


def test_cli_reference_is_current():
    """docs/cli.md is what `python -m ice.cli_reference` writes. Another Python may wrap
    argparse's help differently: there every option and help text must still be in it."""
    written = DOC.read_text()
    if sys.version_info[:2] == (3, 11):  # the version that writes the page
        assert written == reference(), "docs/cli.md is stale: run python -m ice.cli_reference"
        return
    flat = re.sub(r"\s+", " ", written)
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in commands.choices.items():
        for action in sub._actions:
            for text in [*action.option_strings, action.help or ""]:
                assert re.sub(r"\s+", " ", text) in flat, (name, text)
