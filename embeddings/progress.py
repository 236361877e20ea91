"""Progress bars: live on a terminal, a line every few seconds in a log."""

from __future__ import annotations

import sys

from tqdm import tqdm


def progress(total: int, desc: str, unit: str = "img", initial: int = 0, disable: bool = False) -> tqdm:
    tty = sys.stderr.isatty()
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        dynamic_ncols=True,
        mininterval=0.1 if tty else 15.0,
        file=sys.stderr,
        disable=disable,
    )
