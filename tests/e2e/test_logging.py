"""Log formats: JSON lines, a dictConfig file, and the access log line."""

from __future__ import annotations

import json
import signal

import pytest
from wsproto import events as ws

from tests.e2e.test_startup import LOOPS
from tests.e2e.test_websocket import APP as WS_APP
from tests.e2e.test_websocket import RawClient
from tests.harness import Server, read_response


def request(srv: Server, target: str = "/") -> int:
    with srv.connect() as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
        return read_response(sock)[0]


def test_json_log_format():
    """--log-format json: every line is a JSON object; access lines carry their fields."""
    with Server("tests.apps:hello", "--log-format", "json") as srv:
        assert request(srv, "/j?x=1") == 200
        srv.wait_for_line(r'"request": "GET /j\?x=1"')
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    records = [json.loads(line) for line in srv.lines if line.startswith("{")]
    access = [r for r in records if r["logger"] == "corral.access"]
    assert access[0]["status"] == 200
    assert access[0]["bytes"] == 5
    assert access[0]["duration_ms"] >= 0
    # Everything the server printed is JSON (apps print nothing here).
    assert len(records) == len([line for line in srv.lines if line.strip()])


def access_records(srv: Server) -> list[dict]:
    records = [json.loads(line) for line in srv.lines if line.startswith("{")]
    return [r for r in records if r["logger"] == "corral.access"]


@pytest.mark.parametrize("loop", LOOPS[1:])  # the loops whose clock is coarse: uvloop
def test_durations_are_finer_than_the_loop_clock(loop):
    """uvloop's clock ticks in whole milliseconds; access-log durations do not.

    What the design guarantees is the clock's resolution, not any one duration: a
    fast request takes a fraction of a millisecond, and with a microsecond clock a
    duration lands on a whole millisecond once in a thousand. Of 20, at least one is
    not a whole millisecond; on the loop's clock every one is (mostly 0.0).
    """
    with Server("tests.apps:hello", "--log-format", "json", "--loop", loop) as srv:
        for i in range(20):
            assert request(srv, f"/t{i}") == 200
        srv.wait_for_line(r'"request": "GET /t19"')
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    micros = [round(r["duration_ms"] * 1000) for r in access_records(srv)]
    assert len(micros) == 20
    assert all(us >= 0 for us in micros)
    assert any(us % 1000 for us in micros), micros


def test_websocket_session_end_is_logged():
    """A WebSocket logs its handshake, then its end: close code, messages and frame bytes
    each way, with the request escaped like an HTTP line's."""
    with Server(WS_APP, "--log-format", "json") as srv:
        with RawClient(srv, "/e\\cho") as raw:
            raw.expect(ws.AcceptConnection)
            sent = raw.ws.send(ws.TextMessage("héllo")) + raw.ws.send(ws.BytesMessage(b"\x00"))
            raw.sock.sendall(sent)
            assert raw.expect(ws.TextMessage).data == "héllo"
            assert raw.expect(ws.BytesMessage).data == b"\x00"
            close = raw.ws.send(ws.CloseConnection(code=4001))
            raw.sock.sendall(close)
            assert raw.expect(ws.CloseConnection).code == 4001
            assert raw.wait_eof() == []
        srv.wait_for_line(r'"close_code": 4001')
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    handshake, end = [r for r in access_records(srv) if "/e" in r["request"]]
    assert handshake["request"] == end["request"] == "WEBSOCKET /e\\\\cho"
    assert (handshake["status"], handshake["bytes"]) == (101, 0)
    assert end["close_code"] == 4001
    assert (end["messages_in"], end["bytes_in"]) == (2, len(sent) + len(close))
    # Unmasked frames back: 2-byte headers on "héllo" (6 bytes), b"\x00", the Close (2).
    assert (end["messages_out"], end["bytes_out"]) == (2, 8 + 3 + 4)
    assert end["duration_ms"] > 0
    assert "status" not in end
    assert '"WEBSOCKET /e\\\\cho" closed 4001 ' in end["message"]


def test_access_log_can_be_disabled():
    """--no-access-log writes no access line."""
    with Server("tests.apps:hello", "--no-access-log") as srv:
        assert request(srv, "/quiet") == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert "/quiet" not in srv.output


def test_log_config_file(tmp_path):
    """--log-config applies a dictConfig file (here: access lines to a file)."""
    log_file = tmp_path / "access.log"
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": "ACCESS %(message)s"}},
        "handlers": {
            "file": {
                "class": "logging.FileHandler",
                "filename": str(log_file),
                "formatter": "plain",
            },
            "err": {"class": "logging.StreamHandler", "formatter": "plain"},
        },
        "loggers": {
            "corral.access": {"handlers": ["file"], "level": "INFO", "propagate": False},
            "corral.error": {"handlers": ["err"], "level": "INFO", "propagate": False},
        },
    }
    path = tmp_path / "log.json"
    path.write_text(json.dumps(config))
    with Server("tests.apps:hello", "--log-config", str(path)) as srv:
        assert request(srv, "/to-file") == 200
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert '"GET /to-file" 200' in log_file.read_text()


def test_bad_log_config_is_usage_error(tmp_path):
    """An unreadable --log-config is one line and exit code 2."""
    import subprocess
    import sys

    from tests.harness import ROOT

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "corral",
            "tests.apps:hello",
            "--port",
            "0",
            "--log-config",
            str(tmp_path / "missing.json"),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "cannot apply --log-config" in proc.stderr


def test_asyncio_messages_use_the_server_format():
    """What asyncio itself logs goes through the same JSON formatter."""
    import io
    import logging

    from corral.logs import configure_logging

    stream = io.StringIO()
    try:
        configure_logging("info", "json", None, stream)
        logging.getLogger("asyncio").error("Task exception was never retrieved")
        record = json.loads(stream.getvalue().splitlines()[-1])
        assert record["logger"] == "asyncio"
        assert record["level"] == "error"
    finally:
        for name in ("corral", "asyncio"):
            logger = logging.getLogger(name)
            for handler in list(logger.handlers):
                logger.removeHandler(handler)
            logger.propagate = True
            logger.setLevel(logging.NOTSET)
