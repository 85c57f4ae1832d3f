"""The option model and its loading: precedence, provenance, errors."""

from __future__ import annotations

import dataclasses
import errno
import os
from pathlib import Path

import pytest

from corral.config import (
    SPECS,
    BindSpec,
    Config,
    ConfigError,
    effective_binds,
    load_config,
    parse_bind,
)
from corral.config.report import render, render_docs

ROOT = Path(__file__).resolve().parents[2]


def load(cli=None, env=None, cwd=None, config_path=None):
    return load_config(
        {"app": "a:b", **(cli or {})}, env or {}, cwd or Path("/nonexistent"), config_path
    )


def test_defaults():
    """With nothing given, every option has its declared default."""
    loaded = load()
    assert loaded.config == Config(app="a:b")
    assert loaded.sources["workers"] == "default"


def test_config_is_frozen():
    """A Config cannot be changed after it is built."""
    with pytest.raises(dataclasses.FrozenInstanceError):
        load().config.workers = 3  # type: ignore[misc]


def test_precedence_file_env_cli(tmp_path):
    """Defaults < file < env < command line, with the source of each value."""
    f = tmp_path / "corral.toml"
    f.write_text("workers = 2\ngraceful_timeout = 5\nbacklog = 10\n")
    loaded = load({"workers": "4"}, {"CORRAL_GRACEFUL_TIMEOUT": "7"}, config_path=str(f))
    assert loaded.config.workers == 4
    assert loaded.config.graceful_timeout == 7.0
    assert loaded.config.backlog == 10
    assert loaded.sources["workers"] == "command line --workers"
    assert loaded.sources["graceful_timeout"] == "env CORRAL_GRACEFUL_TIMEOUT"
    assert loaded.sources["backlog"] == f"config file {f}"


def test_pyproject_tool_corral(tmp_path):
    """[tool.corral] in ./pyproject.toml is read when no --config is given."""
    (tmp_path / "pyproject.toml").write_text('[tool.corral]\nworkers = 3\nbind = ["unix:/tmp/x"]\n')
    loaded = load(cwd=tmp_path)
    assert loaded.config.workers == 3
    assert loaded.config.bind == ("unix:/tmp/x",)
    assert loaded.config_file == tmp_path / "pyproject.toml"


def test_pyproject_without_section_is_ignored(tmp_path):
    """A pyproject.toml without [tool.corral] is not a config file."""
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load(cwd=tmp_path).config_file is None


def test_web_concurrency_alias():
    """WEB_CONCURRENCY sets workers, but CORRAL_WORKERS wins."""
    assert load(env={"WEB_CONCURRENCY": "5"}).config.workers == 5
    assert load(env={"WEB_CONCURRENCY": "5", "CORRAL_WORKERS": "2"}).config.workers == 2


@pytest.mark.parametrize(
    ("cli", "env", "message"),
    [
        ({"workers": "many"}, {}, "invalid value for workers (command line --workers)"),
        ({"workers": "0"}, {}, "below the minimum"),
        ({}, {"CORRAL_TIMEOUT_KEEP_ALIVE": "soon"}, "(env CORRAL_TIMEOUT_KEEP_ALIVE)"),
        ({}, {"CORRAL_ACCESS_LOG": "maybe"}, "expected true or false"),
        ({"lifespan": "sometimes"}, {}, "not one of auto, on, off"),
        ({"graceful_timeout": "inf"}, {}, "finite"),
        ({"app": "nocolon"}, {}, "is not module:attribute"),
        ({"bind": ["localhost"]}, {}, "invalid value for bind"),
        ({"bind": ["1.2.3.4:99999"]}, {}, "out of range"),
        ({"header": ["no-colon"]}, {}, "not 'Name: value'"),
    ],
)
def test_bad_values_name_option_and_source(cli, env, message):
    """A bad value is one line naming the option and where it came from."""
    with pytest.raises(ConfigError) as info:
        load(cli, env)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("port", [-1, 65536, 99999])
def test_port_out_of_range_reads_like_bind(tmp_path, port):
    """--port, CORRAL_PORT and a file's port refuse what --bind refuses, in its words."""
    with pytest.raises(ConfigError) as bind_error:
        load({"bind": [f"127.0.0.1:{port}"]})
    why = f"port {port} is out of range (0-65535)"
    assert str(bind_error.value).endswith(f": {why}")
    f = tmp_path / "c.toml"
    f.write_text(f"port = {port}\n")
    for cli, env, path, source in [
        ({"port": str(port)}, {}, None, "command line --port"),
        ({}, {"CORRAL_PORT": str(port)}, None, "env CORRAL_PORT"),
        ({}, {}, str(f), f"config file {f}"),
    ]:
        with pytest.raises(ConfigError) as info:
            load(cli, env, config_path=path)
        assert str(info.value) == f"invalid value for port ({source}): {why}"


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_range_edges_are_accepted(port):
    """0 (a free port) up to 65535 are ports."""
    assert load({"port": str(port)}).config.port == port
    assert load({"bind": [f"[::1]:{port}"]}).config.bind == (f"[::1]:{port}",)


def test_app_argument_is_named_as_such():
    """APP is an argument, not an --app flag: errors and sources say so."""
    with pytest.raises(ConfigError) as info:
        load({"app": "good"})
    assert str(info.value) == (
        "invalid value for app (command line APP argument): 'good' is not module:attribute"
    )
    assert "--app" not in str(info.value)
    assert load().sources["app"] == "command line APP argument"


def test_unknown_key_in_file(tmp_path):
    """An unknown key in the config file is an error naming the key and the file."""
    f = tmp_path / "c.toml"
    f.write_text("wokers = 2\n")
    with pytest.raises(ConfigError, match=r"unknown option 'wokers' in config file .*c\.toml"):
        load(config_path=str(f))


def test_wrong_type_in_file(tmp_path):
    """TOML values are type-checked too (a float is not an integer, a bool not a number)."""
    f = tmp_path / "c.toml"
    f.write_text("workers = 2.5\n")
    with pytest.raises(ConfigError, match="expected an integer"):
        load(config_path=str(f))
    f.write_text("graceful_timeout = true\n")
    with pytest.raises(ConfigError, match="expected a number"):
        load(config_path=str(f))


def test_invalid_toml(tmp_path):
    """A syntax error in the file is reported, not raised as a traceback."""
    f = tmp_path / "c.toml"
    f.write_text("workers = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(config_path=str(f))


def test_missing_config_file(tmp_path):
    """A --config file that does not exist is a clear error."""
    with pytest.raises(ConfigError, match="cannot read config file"):
        load(config_path=str(tmp_path / "nope.toml"))


def test_nullable_values():
    """'none' clears a nullable option from env or argv."""
    loaded = load({"limit_concurrency": "10"}, {"CORRAL_MAX_BODY_SIZE": "none"})
    assert loaded.config.limit_concurrency == 10
    assert loaded.config.max_body_size is None


def test_list_from_env():
    """Lists in the environment are comma-separated."""
    loaded = load(env={"CORRAL_BIND": "127.0.0.1:1, unix:/tmp/s"})
    assert loaded.config.bind == ("127.0.0.1:1", "unix:/tmp/s")


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("127.0.0.1:8000", BindSpec("tcp", host="127.0.0.1", port=8000)),
        (":9", BindSpec("tcp", host="0.0.0.0", port=9)),
        ("[::1]:0", BindSpec("tcp", host="::1", port=0)),
        ("unix:/run/app.sock", BindSpec("unix", path="/run/app.sock")),
        ("fd://3", BindSpec("fd", fd=3)),
    ],
)
def test_parse_bind(text, spec):
    """Each address form parses to its spec and prints back the same."""
    assert parse_bind(text) == spec
    assert str(spec) == (text if not text.startswith(":") else "0.0.0.0" + text)


@pytest.mark.parametrize(
    ("text", "code", "hint"),
    [
        ("127.0.0.1:80", errno.EACCES, True),
        ("[::1]:1023", errno.EACCES, True),
        ("127.0.0.1:1024", errno.EACCES, False),  # denied for another reason
        ("127.0.0.1:0", errno.EACCES, False),
        ("127.0.0.1:80", errno.EADDRINUSE, False),
        ("unix:/run/x.sock", errno.EACCES, False),
    ],
)
def test_bind_error_explained(text, code, hint):
    """EACCES on a port below 1024 says what is needed; other failures keep strerror."""
    exc = OSError(code, os.strerror(code))
    explained = parse_bind(text).explain(exc)
    if hint:
        assert explained == (
            f"{os.strerror(code)} (ports below 1024 need root or CAP_NET_BIND_SERVICE)"
        )
    else:
        assert explained == os.strerror(code)


def test_effective_binds_shortcuts():
    """--host/--port/--uds/--fd add to --bind; nothing at all means 127.0.0.1:8000."""
    assert [str(b) for b in effective_binds((), None, None, None, None)] == ["127.0.0.1:8000"]
    assert [str(b) for b in effective_binds((), None, 0, None, None)] == ["127.0.0.1:0"]
    assert [str(b) for b in effective_binds(("unix:/a",), "::1", 5, "/b", 3)] == [
        "unix:/a",
        "[::1]:5",
        "unix:/b",
        "fd://3",
    ]


def test_print_config_lists_every_option():
    """--print-config output names every option once, with its source."""
    text = render(load({"workers": "2"}))
    for name in SPECS:
        assert f"\n{name} = " in "\n" + text
    assert "workers = 2  # command line --workers" in text


def test_options_doc_is_current():
    """docs/options.md is what the declarations generate."""
    assert (ROOT / "docs" / "options.md").read_text() == render_docs()


@pytest.mark.parametrize(
    "text", ["X-Frame-Options: DENY", "X-Empty:", "X-Tab: a\tb", "X-Latin: caf\xe9"]
)
def test_valid_extra_header(text):
    """--header takes any header a response may carry."""
    assert load({"header": (text,)}).config.header == (text,)


@pytest.mark.parametrize(
    "text", ["no colon", "Bad Name: v", ": v", "X: a\x01b", "X: a\x7fb", "X: \u20ac", "X: a\rb"]
)
def test_invalid_extra_header(text):
    """A --header that could not go out on the wire is refused when the config loads."""
    with pytest.raises(ConfigError, match="is not 'Name: value'"):
        load({"header": (text,)})
