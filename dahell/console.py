"""The rich console the commands print with.

On a terminal rich uses its width. Piped to a file or a CI log it would assume 80 columns and
fold wide tables (best sellers, look-alikes) into unreadable slivers: there it gets room for them,
unless COLUMNS says otherwise.
"""

from __future__ import annotations

import os

from rich.console import Console

PIPED_WIDTH = 160


def make_console(*, stderr: bool = False) -> Console:
    console = Console(stderr=stderr)
    if console.is_terminal or "COLUMNS" in os.environ:
        return console
    return Console(stderr=stderr, width=PIPED_WIDTH)
