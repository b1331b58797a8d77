"""Task events for Nomad's TaskEvents stream: a fan-out to every open stream.

Nomad opens the stream once per plugin instance and keeps it open; the lifecycle publishes
progress ("Downloading image ...") that Nomad shows as Driver task events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class TaskEvent:
    task_id: str
    alloc_id: str
    task_name: str
    message: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=lambda: datetime.now(UTC))


class EventBus:
    """publish() never blocks; each subscriber has its own bounded queue (oldest dropped)."""

    def __init__(self, maxsize: int = 1024) -> None:
        self._subscribers: set[asyncio.Queue[TaskEvent]] = set()
        self._maxsize = maxsize

    def publish(self, event: TaskEvent) -> None:
        for q in list(self._subscribers):
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def subscribe(self) -> AsyncGenerator[TaskEvent, None]:
        q: asyncio.Queue[TaskEvent] = asyncio.Queue(self._maxsize)
        self._subscribers.add(q)
        try:
            while True:
                yield await q.get()
        finally:
            self._subscribers.discard(q)
