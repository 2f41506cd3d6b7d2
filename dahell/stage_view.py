"""What the supervisor shows of itself to its readers (metrics), as protocols.

The metrics read the supervisor's state at scrape time; if they imported the supervisor, the
supervisor (which builds them) and they would import each other. Instead they read these
protocols, which the supervisor satisfies by its shape: the import goes one way, from the
supervisor down to this module and `stages/base.py`, never back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from dahell.stages.base import Context, Message, StageState

if TYPE_CHECKING:
    from dahell.config import Config


class StageRuntimeView(Protocol):
    """One supervised stage, read-only."""

    @property
    def state(self) -> StageState: ...

    @property
    def restarts(self) -> int: ...

    @property
    def disk_full(self) -> str | None: ...

    @property
    def ctx(self) -> Context: ...


class SupervisorView(Protocol):
    """The supervisor, read-only: its stages, its queues, its config and its health."""

    @property
    def runtimes(self) -> Mapping[str, StageRuntimeView]: ...

    @property
    def queues(self) -> Mapping[str, asyncio.Queue[Message]]: ...

    @property
    def config(self) -> Config: ...

    def healthy(self) -> tuple[bool, list[str]]: ...
