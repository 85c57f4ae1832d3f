"""ASGI lifespan end to end: --lifespan auto|on|off, startup failure, state per request."""

from __future__ import annotations

import json
import signal

from tests.e2e.test_http import Client
from tests.harness import Server

APP = "tests.apps_http:app"
EXIT_LIFESPAN = 4


def test_startup_and_shutdown_run_once_per_worker() -> None:
    """auto with an app that supports it: startup before serving, shutdown on stop."""
    with Server(APP, "-w", "2") as server:
        assert server.output.count("APP lifespan startup") == 2  # READY came after both
        with Client(server) as client:
            assert json.loads(client.request("GET", "/scope").body)["state"] == [
                "shared",
                "started",
            ]
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    assert server.output.count("APP lifespan shutdown") == 2


def test_state_is_a_shallow_copy_per_request() -> None:
    """B21: keys set by one request do not leak; objects from startup are shared."""
    with Server(APP, "-w", "1") as server, Client(server) as client:
        first = json.loads(client.request("GET", "/state").body)
        second = json.loads(client.request("GET", "/state").body)
    assert first == {"keys": ["shared", "started"], "hits": 1}
    assert second == {"keys": ["shared", "started"], "hits": 2}


def test_auto_carries_on_when_the_app_has_no_lifespan() -> None:
    with Server("tests.apps_http:lifespan_raises", "--lifespan", "auto") as server:
        with Client(server) as client:
            scope = json.loads(client.request("GET", "/scope").body)
        server.wait_for_line("lifespan not supported")
    assert scope["state"] == []


def test_on_requires_lifespan() -> None:
    """--lifespan on: an app that raises on the lifespan scope stops the server (exit 4)."""
    server = Server("tests.apps_http:lifespan_raises", "--lifespan", "on", wait_ready=False)
    with server:
        assert server.wait() == EXIT_LIFESPAN
    assert "APP lifespan scope seen" in server.output


def test_startup_failed_stops_the_server_in_auto_mode() -> None:
    server = Server("tests.apps_http:lifespan_fails", wait_ready=False)
    with server:
        assert server.wait() == EXIT_LIFESPAN
    assert "database unreachable" in server.output
    assert "listening on" not in server.output.split("database unreachable")[-1]


def test_off_never_calls_the_app_with_lifespan() -> None:
    with Server("tests.apps_http:lifespan_fails", "--lifespan", "off") as server:
        with Client(server) as client:
            scope = json.loads(client.request("GET", "/scope").body)
        server.signal(signal.SIGTERM)
        assert server.wait() == 0
    assert scope["state"] == []
    assert "APP lifespan scope seen" not in server.output
