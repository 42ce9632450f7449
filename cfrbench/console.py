"""The console every command prints through.

Why: on a terminal rich measures the window; in a log (CI, `make run > file`, nohup) it falls
back to 80 columns, which folded every verdict table into unreadable fragments. A log gets
160 columns (or $COLUMNS when the caller set it), wide enough for one row per comparison.
"""

from __future__ import annotations

import os
import sys

from rich.console import Console

#: Columns of a console that is not a terminal, unless $COLUMNS says otherwise.
LOG_WIDTH = 160


def log_width(is_terminal: bool, columns: str | None) -> int | None:
    """None (let rich measure) on a terminal; else $COLUMNS if it is a number, else 160."""
    if is_terminal:
        return None
    if columns and columns.isdigit() and int(columns) > 0:
        return int(columns)
    return LOG_WIDTH


def make_console() -> Console:
    return Console(highlight=False,
                   width=log_width(sys.stdout.isatty(), os.environ.get("COLUMNS")))
