"""The EventSink: the broker's acknowledgement, or the local spool and ordered replay when it is down."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from services.collector.adapters.spool import Spool, claim_spool, orphan_spools
from services.collector.ports import Health, Message, Outcome, Publisher
from services.common.errors import UnavailableError

log = logging.getLogger(__name__)

REPLAY_BATCH = 1000
RETRY_SECONDS = 1.0
ORPHAN_CHECK_SECONDS = 30.0


class SpoolingSink:
    """Publishes and waits for the broker's ack; when the broker is down, spools and replays.

    While the spool holds anything (or the last delivery failed), new messages go to
    the spool too, so replay keeps arrival order. Replay runs in one
    background task and commits the spool only after the broker acknowledged a batch.
    """

    def __init__(
        self,
        publisher_factory: Callable[[], Publisher],
        spool_root: Path,
        spool_max_bytes: int,
        spool_segment_bytes: int,
        on_spooled: Callable[[int], None] = lambda _count: None,
        on_replayed: Callable[[int], None] = lambda _count: None,
        on_publish_seconds: Callable[[float], None] = lambda _seconds: None,
        headroom: int = 32 * 1024,
    ) -> None:
        self._headroom = headroom
        self._publisher_factory = publisher_factory
        self._publisher: Publisher | None = None
        self._root = spool_root
        self._max_bytes = spool_max_bytes
        self._segment_bytes = spool_segment_bytes
        self._spool: Spool | None = None
        self._broker_down = False
        self._wake = asyncio.Event()
        self._replay_task: asyncio.Task[None] | None = None
        self._on_spooled = on_spooled
        self._on_replayed = on_replayed
        self._on_publish_seconds = on_publish_seconds

    async def start(self) -> None:
        """Claim a spool folder and start replaying what it holds."""
        self._publisher = self._publisher_factory()
        self._spool = claim_spool(self._root, self._max_bytes, self._segment_bytes)
        if self._spool.pending_bytes:
            log.info(
                "spool: replaying records left from an earlier run",
                extra={"spool": str(self._spool.directory), "bytes": self._spool.pending_bytes},
            )
        self._replay_task = asyncio.create_task(self._replay_forever(), name="spool-replay")

    @property
    def spool(self) -> Spool:
        if self._spool is None:
            raise UnavailableError("collector is not started")
        return self._spool

    @property
    def publisher(self) -> Publisher:
        if self._publisher is None:
            raise UnavailableError("collector is not started")
        return self._publisher

    async def deliver(self, messages: Sequence[Message]) -> Outcome:
        """Acknowledged by the broker, or else durably spooled; UnavailableError when neither."""
        spool = self.spool
        if self._broker_down or spool.pending_bytes:
            await self._spool_messages(messages)
            return Outcome.SPOOLED
        started = time.perf_counter()
        results = await self.publisher.publish_many(messages)
        self._on_publish_seconds(time.perf_counter() - started)
        if not any(results):
            return Outcome.ACKNOWLEDGED
        failed = [message for message, error in zip(messages, results, strict=True) if error]
        self._broker_down = True
        log.warning("broker did not acknowledge; spooling", extra={"messages": len(failed)})
        await self._spool_messages(failed)
        return Outcome.SPOOLED

    async def _spool_messages(self, messages: Sequence[Message]) -> None:
        await self.spool.append(messages)
        self._on_spooled(len(messages))
        self._wake.set()

    def health(self) -> Health:
        """Broker state as last seen, and the spool's room."""
        spool = self._spool
        return Health(
            broker_reachable=not self._broker_down,
            spool_bytes=spool.pending_bytes if spool else 0,
            spool_has_room=spool.has_room(self._headroom) if spool else False,
        )

    async def _replay_forever(self) -> None:
        last_orphan_check = 0.0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RETRY_SECONDS)
            self._wake.clear()
            try:
                if self.spool.pending_bytes or self._broker_down:
                    await self._drain(self.spool)
                elif time.monotonic() - last_orphan_check > ORPHAN_CHECK_SECONDS:
                    last_orphan_check = time.monotonic()
                    await self._adopt_orphans()
            except Exception:  # a replay error must never stop replay; the next round retries
                log.exception("spool replay failed; retrying")
                await asyncio.sleep(RETRY_SECONDS)

    async def _drain(self, spool: Spool) -> None:
        while True:
            messages, position = spool.read(REPLAY_BATCH)
            if not messages:
                if not spool.pending_bytes and spool is self._spool:
                    self._broker_down = False
                return
            results = await self.publisher.publish_many(messages)
            if any(results):
                self._broker_down = True
                await asyncio.sleep(RETRY_SECONDS)
                return
            spool.commit(position)
            self._broker_down = False
            self._on_replayed(len(messages))

    async def _adopt_orphans(self) -> None:
        spools = await asyncio.to_thread(
            orphan_spools, self._root, self._max_bytes, self._segment_bytes
        )
        for orphan in spools:
            try:
                log.info(
                    "spool: replaying an orphaned spool", extra={"spool": str(orphan.directory)}
                )
                await self._drain(orphan)
            finally:
                orphan.close()

    async def close(self) -> None:
        """Stop replay, flush the producer (everything in flight) and close the spool."""
        if self._replay_task is not None:
            self._replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replay_task
        if self._publisher is not None:
            await asyncio.to_thread(self._publisher.close, 10.0)
        if self._spool is not None:
            self._spool.close()
