"""The command line: help, version, usage errors and --print-config (in-process)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from corral.cli import command


@pytest.fixture
def run(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    for key in list(__import__("os").environ):
        if key.startswith("CORRAL_") or key == "WEB_CONCURRENCY":
            monkeypatch.delenv(key)
    runner = CliRunner()
    return lambda *args, env=None: runner.invoke(command, list(args), env=env)


def test_help_is_grouped(run):
    """--help lists options under readable section headings."""
    result = run("--help")
    assert result.exit_code == 0
    for heading in ("Binding:", "Workers and supervision:", "Timeouts:", "Logging:"):
        assert heading in result.output
    assert "--graceful-timeout" in result.output
    assert "CORRAL_WORKERS" in result.output


def test_version(run):
    """--version prints the version."""
    result = run("--version")
    assert result.exit_code == 0
    assert result.output.startswith("corral 0.")


def test_bad_value_exit_2(run):
    """A bad option value is one line on stderr and exit code 2."""
    result = run("a:b", "--workers", "lots")
    assert result.exit_code == 2
    assert result.output.strip() == (
        "corral: error: invalid value for workers (command line --workers): "
        "expected an integer, got 'lots'"
    )


def test_bad_env_exit_2(run):
    """A bad environment value names the variable."""
    result = run("a:b", env={"CORRAL_BACKLOG": "-1"})
    assert result.exit_code == 2
    assert "env CORRAL_BACKLOG" in result.output


def test_unknown_flag_exit_2(run):
    """An unknown flag is a click usage error, also exit code 2."""
    assert run("a:b", "--no-such-flag").exit_code == 2


def test_missing_app_exit_2(run):
    """No APP anywhere is a usage error."""
    result = run()
    assert result.exit_code == 2
    assert "no application given" in result.output


def test_print_config_sources(run, tmp_path):
    """--print-config shows values from every layer with their sources."""
    (tmp_path / "pyproject.toml").write_text("[tool.corral]\napp = 'x:y'\nbacklog = 7\n")
    result = run("--print-config", "-w", "3", "--no-access-log", env={"CORRAL_ROOT_PATH": "/r"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert 'app = "x:y"  # config file ' + str(tmp_path / "pyproject.toml") in lines
    assert "workers = 3  # command line --workers" in lines
    assert "access_log = false  # command line --access-log" in lines
    assert 'root_path = "/r"  # env CORRAL_ROOT_PATH' in lines
    assert "backlog = 7  # config file " + str(tmp_path / "pyproject.toml") in lines


def test_app_without_attribute_names_the_argument(run):
    """`corral good` blames the APP argument (there is no --app), on one line, exit 2."""
    result = run("good")
    assert result.exit_code == 2
    assert result.output == (
        "corral: error: invalid value for app (command line APP argument): "
        "'good' is not module:attribute\n"
    )


def test_print_config_names_the_app_argument(run):
    """--print-config gives APP's source as the argument, not as an --app flag."""
    result = run("a:b", "--print-config")
    assert result.exit_code == 0, result.output
    assert 'app = "a:b"  # command line APP argument' in result.output.splitlines()


@pytest.mark.parametrize("port", ["99999", "65536", "-1"])
def test_port_out_of_range_exit_2(run, port):
    """--port outside 0-65535 is refused in --bind's words instead of binding a random port."""
    result = run("a:b", "--port", port)
    assert result.exit_code == 2
    assert result.output == (
        "corral: error: invalid value for port (command line --port): "
        f"port {port} is out of range (0-65535)\n"
    )


def test_repeatable_bind(run):
    """--bind/-b can be repeated."""
    result = run("a:b", "--print-config", "-b", "127.0.0.1:1", "--bind", "unix:/tmp/x")
    assert 'bind = ["127.0.0.1:1", "unix:/tmp/x"]  # command line --bind' in result.output
