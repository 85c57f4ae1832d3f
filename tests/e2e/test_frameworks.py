"""examples/fastapi_app.py and examples/starlette_app.py under corral, end to end.

Each app is served by one worker on port 0 and exercised with httpx and the websockets
client: JSON, path and query parameters, validation errors, request bodies (JSON, 1 MiB
raw, chunked), a streamed response, a WebSocket echo, and the lifespan's state as
requests see it. The same tests run against both apps, which expose the same routes.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
from collections.abc import Iterator

import httpx
import pytest
import websockets

from tests.harness import TIME_FACTOR, Server

APPS = {"fastapi": "examples.fastapi_app:app", "starlette": "examples.starlette_app:app"}


@pytest.fixture(scope="module", params=sorted(APPS))
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, Server]]:
    name = request.param
    with Server(APPS[name], "-w", "1") as srv:
        yield name, srv


@pytest.fixture
def http(served: tuple[str, Server]) -> Iterator[httpx.Client]:
    _, srv = served
    with httpx.Client(base_url=f"http://{srv.host}:{srv.port}", timeout=10 * TIME_FACTOR) as c:
        yield c


def test_json(served: tuple[str, Server], http: httpx.Client) -> None:
    """A JSON answer with the framework's content type, from the worker."""
    name, srv = served
    response = http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["server"] == "corral"
    assert response.json() == {"framework": name, "pid": min(srv.worker_pids())}


def test_path_and_query_parameters(http: httpx.Client) -> None:
    """Typed path parameters and query strings; a bad one is refused by the framework."""
    assert http.get("/items/42", params={"q": "a b&c"}).json() == {"item_id": 42, "q": "a b&c"}
    assert http.get("/items/7").json() == {"item_id": 7, "q": None}
    assert http.get("/items/seven").status_code in (404, 422)


def test_json_body(http: httpx.Client) -> None:
    """A JSON body in, a computed JSON body out; a body without a name is 422."""
    response = http.post("/items", json={"name": "kettle", "price": 10})
    assert response.status_code == 200
    assert response.json() == {"name": "kettle", "price": 10.0, "with_tax": 12.0}
    assert http.post("/items", json={"price": 1}).status_code == 422


def test_large_and_chunked_bodies(http: httpx.Client) -> None:
    """1 MiB with a Content-Length, and a chunked upload, arrive whole."""
    body = os.urandom(1024 * 1024)
    response = http.post("/upload", content=body)
    assert response.json() == {"size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    def chunks() -> Iterator[bytes]:
        for i in range(20):
            yield bytes([i]) * 1000

    response = http.post("/upload", content=chunks())
    expected = b"".join(chunks())
    assert response.json() == {"size": 20000, "sha256": hashlib.sha256(expected).hexdigest()}


def test_streaming_response(http: httpx.Client) -> None:
    """A streamed answer goes out chunked, line by line, and ends cleanly."""
    with http.stream("GET", "/stream", params={"n": 20}) as response:
        assert response.status_code == 200
        assert response.headers["transfer-encoding"] == "chunked"
        lines = list(response.iter_lines())
    assert lines == [f"line {i}" for i in range(20)]


def test_lifespan_state_seen_in_requests(served: tuple[str, Server], http: httpx.Client) -> None:
    """The lifespan's state reaches every request; its objects are shared, not copied."""
    name, srv = served
    assert f"{name} lifespan startup in {min(srv.worker_pids())}" in srv.output
    first = http.get("/state").json()
    second = http.get("/state").json()
    assert first["worker_pid"] == first["pid"] == min(srv.worker_pids())
    assert first["started_at"] == second["started_at"]
    assert second["hits"] == first["hits"] + 1


def test_websocket_echo(served: tuple[str, Server]) -> None:
    """Text and binary messages, up to 1 MiB, come back as sent; close is clean."""
    _, srv = served

    async def scenario() -> None:
        uri = f"ws://{srv.host}:{srv.port}/ws"
        async with websockets.connect(uri, max_size=2**21) as ws:
            for message in ("hello", "é" * 1000, b"\x00\x01", os.urandom(1024 * 1024)):
                await ws.send(message)
                assert await asyncio.wait_for(ws.recv(), 10 * TIME_FACTOR) == message
        assert ws.close_code == 1000

    asyncio.run(scenario())


def test_lifespan_shutdown_runs_on_stop() -> None:
    """TERM: the app's lifespan shutdown runs in every worker, and the exit is clean."""
    for name, app in APPS.items():
        with Server(app, "-w", "2") as srv:
            srv.signal(signal.SIGTERM)
            assert srv.wait() == 0
            assert srv.output.count(f"{name} lifespan shutdown in") == 2, srv.output
