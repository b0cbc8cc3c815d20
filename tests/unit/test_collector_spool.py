"""The durable spool: order, group fsync, recovery after a crash, torn tails, bounds, locking."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from services.collector.adapters.spool import Spool, claim_spool, orphan_spools
from services.common.errors import UnavailableError


def _messages(start: int, count: int) -> list[tuple[str, str | None, bytes]]:
    return [
        ("events.raw", f"k{i}" if i % 3 else None, f"value-{i}".encode())
        for i in range(start, start + count)
    ]


def _open(directory: Path, max_bytes: int = 1 << 20, segment_bytes: int = 4096) -> Spool:
    spool = Spool(directory, max_bytes, segment_bytes)
    assert spool.try_open()
    return spool


def _drain(spool: Spool, batch: int = 7) -> list[tuple[str, str | None, bytes]]:
    found = []
    while True:
        messages, position = spool.read(batch)
        if not messages:
            return found
        found.extend(messages)
        spool.commit(position)


def test_replays_in_order_across_segments_and_deletes_them(tmp_path: Path) -> None:
    spool = _open(tmp_path)

    async def write() -> None:
        # Concurrent appends share fsyncs; each returns only once its bytes are synced.
        await asyncio.gather(*(spool.append(_messages(i * 10, 10)) for i in range(30)))

    asyncio.run(write())
    assert len(list(tmp_path.glob("*.seg"))) > 1
    assert _drain(spool) == _messages(0, 300)
    assert spool.pending_bytes == 0
    assert len(list(tmp_path.glob("*.seg"))) == 1


def test_reopen_resumes_after_the_last_commit(tmp_path: Path) -> None:
    spool = _open(tmp_path)
    asyncio.run(spool.append(_messages(0, 50)))
    messages, position = spool.read(20)
    spool.commit(position)
    spool.close()  # as after a crash: the lock is gone with the process

    again = _open(tmp_path)
    assert _drain(again) == _messages(20, 30)


def test_a_torn_tail_is_dropped_on_recovery(tmp_path: Path) -> None:
    spool = _open(tmp_path, segment_bytes=1 << 20)
    asyncio.run(spool.append(_messages(0, 5)))
    spool.close()
    [segment] = tmp_path.glob("*.seg")
    with segment.open("ab") as handle:
        handle.write(b"\x00\x00\x01\x00garbage")  # a record cut short by a crash
    again = _open(tmp_path, segment_bytes=1 << 20)
    assert _drain(again) == _messages(0, 5)
    asyncio.run(again.append(_messages(5, 1)))
    assert _drain(again) == _messages(5, 1)


def test_full_spool_refuses_with_retry_after(tmp_path: Path) -> None:
    spool = _open(tmp_path, max_bytes=600)
    with pytest.raises(UnavailableError) as info:
        for i in range(100):
            asyncio.run(spool.append(_messages(i, 1)))
    assert info.value.retry_after_seconds >= 1
    assert not spool.has_room(100)
    _drain(spool)
    assert spool.has_room(100)


def test_a_folder_has_one_owner_and_orphans_are_found(tmp_path: Path) -> None:
    first = claim_spool(tmp_path, 1 << 20, 4096)
    second = claim_spool(tmp_path, 1 << 20, 4096)
    assert first.directory != second.directory
    assert not Spool(first.directory, 1 << 20, 4096).try_open()
    asyncio.run(second.append(_messages(0, 3)))
    second.close()  # its worker is gone; the records stay
    [orphan] = orphan_spools(tmp_path, 1 << 20, 4096)
    assert orphan.directory == second.directory
    assert _drain(orphan) == _messages(0, 3)
    orphan.close()
    first.close()
