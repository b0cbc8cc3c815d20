"""The attributor's composition root and consume-attribute-flush-commit loop."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime

from services.attributor.adapters.clickhouse import ClickHouseSink, Sink, StateStore, connect
from services.attributor.adapters.kafka import IdentityReader, LeadInput
from services.attributor.journeys import IdentityLinkFact, JourneyBook, StageEvent, Touch
from services.attributor.models import ModelSettings, fit_markov
from services.attributor.settings import AttributorSettings
from services.common.errors import UnavailableError

log = logging.getLogger(__name__)


class VersionClock:
    """Computation versions: nanoseconds since the epoch, strictly increasing in this process.

    Starts above the newest version already written, so a restarted worker (or one on a
    host whose clock is behind) never writes a computation that loses to an older one.
    """

    def __init__(self, floor: int = 0, now: Callable[[], int] = time.time_ns) -> None:
        self._last = floor
        self._now = now

    def __call__(self) -> int:
        self._last = max(self._now(), self._last + 1)
        return self._last

    def raise_floor(self, floor: int) -> None:
        """Never hand out a version at or below ``floor`` (e.g. one another instance wrote)."""
        self._last = max(self._last, floor)


class Processor:
    """Applies input records to the journey book and writes facts to a sink (no Kafka here).

    Input records are buffered as they come; ``flush()`` attributes every lead that
    changed since the last flush (all its deals and its creation, under every model),
    adds those facts and writes everything in one sink flush.
    """

    def __init__(
        self,
        sink: Sink,
        model_settings: ModelSettings,
        versions: Callable[[], int],
        book: JourneyBook | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.sink = sink
        self.model_settings = model_settings
        self.versions = versions
        self.book = book or JourneyBook()
        self._now = now

    def handle(self, records: Iterable[Touch | StageEvent]) -> None:
        """Apply touchpoints and deal-stage events of owned partitions."""
        for record in records:
            if isinstance(record, Touch):
                self.book.add_touch(record)
                self.sink.add_touch(record)
            else:
                self.book.add_stage_event(record)
                self.sink.add_stage_event(record)

    def handle_links(self, links: Iterable[IdentityLinkFact], write: bool = True) -> None:
        """Apply identity links (from every partition); ``write`` also stores them in ClickHouse."""
        for link in links:
            self.book.add_link(link)
            if write:
                self.sink.add_link(link)

    def flush(self) -> int:
        """Attribute the changed leads and write everything buffered; returns the rows written."""
        now = self._now()
        for attribution in self.book.attribute_dirty(self.model_settings, self.versions, now):
            self.sink.add_attribution(attribution)
        return self.sink.flush()


class Worker:
    """Consumes the lead topics and identity links, attributes, flushes, then commits offsets."""

    def __init__(
        self,
        settings: AttributorSettings,
        lead_input: LeadInput,
        identity: IdentityReader,
        processor: Processor,
        store: StateStore,
    ) -> None:
        self.settings = settings
        self.lead_input = lead_input
        self.identity = identity
        self.processor = processor
        self.store = store
        self.stopping = threading.Event()
        self._unflushed = 0
        self._first_unflushed: float | None = None
        self._flushes = 0
        self._markov_at = 0.0
        self.clock = VersionClock()

    # ----------------------------------------------------------------- rebalance

    def _on_assign(self, partitions: set[int]) -> None:
        """Restore the leads of the gained partitions from ClickHouse, then reconcile."""
        book = self.processor.book
        # The previous owner may run on a host whose clock is ahead of ours.
        self.clock.raise_floor(self.store.max_version())
        for touch in self.store.touches(partitions):
            book.lead(touch.lead_id, touch.partition).add_touch(touch)
        for event in self.store.stage_events(partitions):
            book.lead(event.lead_id, event.partition).add_stage_event(event)
        for lead_id, partition, created_at in self.store.lead_creations(partitions):
            book.restore_lead(lead_id, partition, created_at)
        dirty = book.reconcile()
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(partitions), "leads": len(book.leads), "dirty": len(dirty)},
        )

    def _on_revoke(self, partitions: set[int]) -> None:
        """Write and commit what was done for the partitions before they go."""
        try:
            self._flush()
        except UnavailableError as exc:
            log.warning("flush on revoke failed; next owner reprocesses", extra={"error": str(exc)})
            self.lead_input.forget(partitions)
        self.processor.book.drop_partitions(partitions)
        log.info("partitions revoked", extra={"partitions": sorted(partitions)})

    # ----------------------------------------------------------------- loop

    def _refresh_markov(self) -> None:
        interval = self.settings.markov_refresh_seconds
        if interval <= 0 or time.monotonic() - self._markov_at < interval:
            return
        self._markov_at = time.monotonic()
        weights = fit_markov(self.store.channel_paths())
        self.processor.model_settings = replace(self.processor.model_settings, markov=weights)
        log.info("markov model refitted", extra={"channels": len(weights.removal_effects)})

    def _flush(self) -> None:
        """Attribute, write (retrying while ClickHouse is down), then commit the offsets."""
        delay = 0.5
        while True:
            try:
                written = self.processor.flush()
                break
            except UnavailableError as exc:
                if self.stopping.is_set():
                    raise
                log.warning("flush failed, retrying", extra={"error": str(exc), "in_s": delay})
                time.sleep(delay)
                delay = min(delay * 2, 10.0)
        self._flushes += 1
        if self.settings.exit_after_flushes and self._flushes >= self.settings.exit_after_flushes:
            log.warning("exit_after_flushes reached: exiting before the offset commit")
            logging.shutdown()
            os._exit(86)
        self.lead_input.commit()
        if written:
            log.info("flushed", extra={"rows": written, "messages": self._unflushed})
        self._unflushed = 0
        self._first_unflushed = None

    def run(self) -> None:
        """Until ``stopping`` is set: catch up identity, then consume, attribute, flush, commit."""
        self.clock.raise_floor(self.store.max_version())
        self.processor.versions = self.clock
        read = self.identity.catch_up(lambda links: self.processor.handle_links(links))
        log.info("identity links loaded", extra={"links": read})
        self._refresh_markov()
        self.lead_input.subscribe(self._on_assign, self._on_revoke)
        batch = self.settings.batch_max_messages
        while not self.stopping.is_set():
            records = self.lead_input.poll(min(batch, 1000), 0.2)
            links, _ = self.identity.poll(1000, 0)
            if records or links:
                self.processor.handle(records)
                self.processor.handle_links(links)
                self._unflushed += len(records) + len(links)
                if self._first_unflushed is None:
                    self._first_unflushed = time.monotonic()
            due = self._first_unflushed is not None and (
                self._unflushed >= batch
                or time.monotonic() - self._first_unflushed >= self.settings.batch_max_seconds
            )
            if due:
                self._flush()
            self._refresh_markov()
        self._flush()

    def close(self) -> None:
        """Leave the group and close the readers."""
        self.lead_input.close()
        self.identity.close()


def build_worker(settings: AttributorSettings) -> Worker:
    """Compose the worker from settings: real Kafka consumers, ClickHouse sink and state store."""
    client = connect(settings.clickhouse, migrate=True)
    client_id = f"attributor-{os.getpid()}"
    store = StateStore(client)
    processor = Processor(
        ClickHouseSink(client), settings.model_settings(), VersionClock(), JourneyBook()
    )
    lead_input = LeadInput(
        settings.kafka, settings.consumer_group, client_id, settings.session_timeout_ms
    )
    identity = IdentityReader(settings.kafka, client_id)
    return Worker(settings, lead_input, identity, processor, store)
