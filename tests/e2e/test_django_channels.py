"""examples/django_chat under corral: Django for HTTP, Channels for WebSocket, Redis between.

A real ``redis-server`` runs on a free loopback port for the module, the sqlite database
lives in a temp dir (``DJANGO_CHAT_DB``), and corral serves the example with 2 workers.
The WebSocket test opens clients over fresh connections until both workers serve some
(each consumer says hello with its worker's pid), then checks that every client gets
every message: a message posted on one worker reaches the clients of the other one only
through channels_redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import websockets

from tests.harness import ROOT, TIME_FACTOR, Server, wait_until

APP = "examples.django_chat.asgi:application"
SETTINGS = "examples.django_chat.settings"


def free_port() -> int:
    """A loopback port that was free a moment ago (redis cannot bind port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[int]:
    """Run redis-server on a free loopback port, without persistence; yield the port."""
    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed; .ci/run installs it with apt-get")
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    for _ in range(5):
        port = free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(workdir)]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 10 * TIME_FACTOR
            while proc.poll() is None and time.monotonic() < deadline:
                if redis_pings(port):
                    break
                time.sleep(0.02)
            if proc.poll() is not None:
                continue  # the port was taken meanwhile: try another one
            if not redis_pings(port):
                raise AssertionError("redis-server did not answer PING within 10 s")
            yield port
            return
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
    raise AssertionError("redis-server could not bind a free port in 5 attempts")


@pytest.fixture(scope="module")
def chat_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Redis running, the sqlite database migrated; the environment for the server."""
    workdir = tmp_path_factory.mktemp("django_chat")
    with redis_server(workdir) as port:
        env = {
            "DJANGO_SETTINGS_MODULE": SETTINGS,
            "DJANGO_CHAT_DB": str(workdir / "chat.sqlite3"),
            "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        }
        migrate = subprocess.run(
            [sys.executable, "-m", "django", "migrate", "--no-input"],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60 * TIME_FACTOR,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        yield env


@pytest.fixture(scope="module")
def chat_server(chat_env: dict[str, str]) -> Iterator[Server]:
    with Server(APP, "-w", "2", env=chat_env) as srv:
        # wait_ready saw the first READY line: wait for the second worker's too.
        wait_until(lambda: len(srv.worker_pids()) == 2, 15, "both workers READY")
        yield srv


async def _recv_json(ws: websockets.ClientConnection) -> dict[str, object]:
    return json.loads(await asyncio.wait_for(ws.recv(), 10 * TIME_FACTOR))


async def _open_clients(
    srv: Server, room: str, minimum: int, limit: int = 200
) -> list[tuple[websockets.ClientConnection, int]]:
    """Open clients, each on a fresh connection, until both workers serve some."""
    uri = f"ws://{srv.host}:{srv.port}/ws/chat/{room}/"
    origin = f"http://{srv.host}:{srv.port}"
    clients: list[tuple[websockets.ClientConnection, int]] = []
    try:
        for _ in range(limit):
            ws = await websockets.connect(uri, origin=origin, open_timeout=10 * TIME_FACTOR)
            clients.append((ws, 0))
            hello = await _recv_json(ws)
            assert hello["type"] == "hello"
            assert hello["room"] == room
            clients[-1] = (ws, int(str(hello["pid"])))
            if len(clients) >= minimum and len({pid for _, pid in clients}) == 2:
                return clients
        pids = {pid for _, pid in clients}
        raise AssertionError(f"{limit} connections all went to worker(s) {pids}")
    except BaseException:
        await asyncio.gather(*(ws.close() for ws, _ in clients))
        raise


async def _collect(ws: websockets.ClientConnection, want: int) -> list[dict[str, object]]:
    got: list[dict[str, object]] = []
    while len(got) < want:
        event = await _recv_json(ws)
        assert event["type"] == "message", event
        got.append(event)
    return got


def test_every_client_gets_every_message_across_workers(chat_server: Server) -> None:
    """Clients on both workers; each message reaches all of them through Redis."""
    srv = chat_server
    room = "crossworker"

    async def scenario() -> tuple[list[int], list[list[dict[str, object]]]]:
        clients = await _open_clients(srv, room, minimum=8)
        try:
            for i, (ws, pid) in enumerate(clients):
                await ws.send(json.dumps({"author": f"client{i}@{pid}", "text": f"message {i}"}))
            received = await asyncio.gather(*(_collect(ws, len(clients)) for ws, _ in clients))
        finally:
            await asyncio.gather(*(ws.close() for ws, _ in clients))
        return [pid for _, pid in clients], received

    pids, received = asyncio.run(scenario())
    assert set(pids) == srv.worker_pids()
    texts = {f"message {i}" for i in range(len(pids))}
    for client_pid, events in zip(pids, received, strict=True):
        assert {e["text"] for e in events} == texts
        # The message each client sent was stored (and broadcast) by its own worker...
        for event in events:
            author_pid = int(str(event["author"]).rsplit("@", 1)[1])
            assert event["pid"] == author_pid
        # ...so every client got messages from the other worker, through Redis.
        assert {e["pid"] for e in events} - {client_pid}
    # The sqlite view has them all, stored by both workers.
    with httpx.Client(base_url=f"http://{srv.host}:{srv.port}", timeout=10) as http:
        response = http.get(f"/rooms/{room}/messages")
    assert response.status_code == 200
    stored = response.json()["messages"]
    assert {m["text"] for m in stored} == texts
    assert {m["pid"] for m in stored} == set(pids)


def test_http_page_and_sqlite_view(chat_server: Server) -> None:
    """The page renders with the rooms from sqlite; POST stores and GET lists a message."""
    srv = chat_server
    with httpx.Client(base_url=f"http://{srv.host}:{srv.port}", timeout=10) as http:
        created = http.post("/rooms/httproom/messages", json={"author": "ann", "text": "hi"})
        assert created.status_code == 201, created.text
        assert created.json()["text"] == "hi"
        listed = http.get("/rooms/httproom/messages")
        assert listed.status_code == 200
        assert [m["text"] for m in listed.json()["messages"]] == ["hi"]
        page = http.get("/", params={"room": "httproom"})
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "Room <code>httproom</code>" in page.text
        assert 'href="?room=httproom">httproom</a> (1)' in page.text
        bad = http.post("/rooms/httproom/messages", content=b"not json")
        assert bad.status_code == 400
        assert http.get("/nowhere").status_code == 404


def test_http_post_reaches_websocket_clients_on_both_workers(chat_server: Server) -> None:
    """A message POSTed over HTTP (one worker) reaches WebSocket clients on both."""
    srv = chat_server

    async def scenario() -> list[tuple[int, dict[str, object]]]:
        clients = await _open_clients(srv, "mixed", minimum=2)
        try:
            async with httpx.AsyncClient(base_url=f"http://{srv.host}:{srv.port}") as http:
                response = await http.post(
                    "/rooms/mixed/messages", json={"author": "http", "text": "from a POST"}
                )
                assert response.status_code == 201
            return [(pid, (await _collect(ws, 1))[0]) for ws, pid in clients]
        finally:
            await asyncio.gather(*(ws.close() for ws, _ in clients))

    got = asyncio.run(scenario())
    assert {pid for pid, _ in got} == srv.worker_pids()
    assert all(event["text"] == "from a POST" for _, event in got)


def test_websocket_from_another_site_is_refused(chat_server: Server) -> None:
    """AllowedHostsOriginValidator: a foreign Origin gets 403, the server keeps serving."""
    srv = chat_server

    async def scenario() -> int:
        uri = f"ws://{srv.host}:{srv.port}/ws/chat/lobby/"
        with pytest.raises(websockets.InvalidStatus) as info:
            await websockets.connect(uri, origin="http://evil.example")
        return info.value.response.status_code

    assert asyncio.run(scenario()) == 403
    with httpx.Client(base_url=f"http://{srv.host}:{srv.port}", timeout=10) as http:
        assert http.get("/rooms/lobby/messages").status_code == 200


def test_djangos_own_asgi_application(chat_env: dict[str, str]) -> None:
    """``django_application`` is plain ``get_asgi_application()``: HTTP is served, and
    its refusal of the lifespan scope is taken as "no lifespan"."""
    with Server("examples.django_chat.asgi:django_application", env=chat_env) as srv:
        with httpx.Client(base_url=f"http://{srv.host}:{srv.port}", timeout=10) as http:
            page = http.get("/")
            assert page.status_code == 200
            assert "<h1>Room <code>lobby</code></h1>" in page.text
            assert http.get("/rooms/lobby/messages").status_code == 200
        assert "ASGI lifespan not supported by the app" in srv.output
