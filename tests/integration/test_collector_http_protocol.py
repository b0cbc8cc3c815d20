"""The collector's coalescing HTTP protocol under a real uvicorn server and real sockets.

Every response shape the server can produce must arrive whole and in order: one-shot
responses, streamed bodies with pauses, HEAD, keep-alive sequences and Connection: close.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn

from services.broker.local import free_port


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers by path: /json (one shot), /stream (three chunks with pauses), /echo."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    path = scope["path"]
    if path == "/slow-stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(1.0)
        await send({"type": "http.response.body", "body": b"last"})
        return
    if path == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for index in range(3):
            await send(
                {"type": "http.response.body", "body": b"part-%d;" % index, "more_body": True}
            )
            await asyncio.sleep(0.05)
        await send({"type": "http.response.body", "body": b"end"})
        return
    answer = body if path == "/echo" else b'{"ok":true}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="services.collector.http:CoalescingHttpToolsProtocol",
        log_config=None,
        access_log=False,
    )
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert thread.is_alive(), "uvicorn exited"
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield port
    instance.should_exit = True
    thread.join(30)


def test_keep_alive_requests_get_whole_responses_in_order(server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=5)
    for index in range(50):
        payload = f'{{"n":{index}}}'.encode() * (1 + index * 40)  # up to ~16 KB
        connection.request("POST", "/echo", body=payload)
        response = connection.getresponse()
        assert (response.status, response.read()) == (200, payload)
    connection.close()


def test_streamed_body_arrives_whole(server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=5)
    connection.request("GET", "/stream")
    response = connection.getresponse()
    assert response.getheader("transfer-encoding") == "chunked"
    assert response.read() == b"part-0;part-1;part-2;end"
    connection.request("GET", "/json")  # the connection is still usable after chunked
    assert connection.getresponse().read() == b'{"ok":true}'
    connection.close()


def test_streamed_parts_are_not_held_back_until_the_end(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as client:
        client.sendall(b"GET /slow-stream HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        received = b""
        while b"first" not in received:
            received += client.recv(65536)
        assert time.monotonic() - started < 0.9  # the app sends "last" only after 1 s
        assert b"last" not in received


def test_head_answers_headers_only(server: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", server, timeout=5)
    connection.request("HEAD", "/json")
    response = connection.getresponse()
    assert (response.status, response.getheader("content-length"), response.read()) == (
        200,
        "11",
        b"",
    )
    connection.request("GET", "/json")
    assert connection.getresponse().read() == b'{"ok":true}'
    connection.close()


def test_connection_close_sends_the_response_before_closing(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as client:
        client.sendall(b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert body == b'{"ok":true}'


def test_pipelined_requests_are_answered_in_order(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=5) as client:
        requests = b"".join(
            b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(b), b)
            for b in (b"first", b"second", b"third")
        )
        client.sendall(requests + b"GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b""
        while chunk := client.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 4
    assert [received.index(w) for w in (b"first", b"second", b"third", b'{"ok":true}')] == sorted(
        received.index(w) for w in (b"first", b"second", b"third", b'{"ok":true}')
    )
