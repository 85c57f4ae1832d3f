"""Loading a :class:`Config`: defaults < config file < environment < command line.

Loading is a pure function of its inputs (the command-line values that were given, an
environment mapping and a working directory), so the master can run it again on HUP
and keep the old config when the new one is invalid. Every value remembers where it
came from, for ``--print-config`` and for error messages.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, final

from corral.config.binds import BindError, parse_bind, port_error
from corral.config.options import RELOAD_DEFAULTS, SPECS, Config, Kind, OptionSpec
from corral.protocol.response import ResponseError, header_from_text

ENV_PREFIX = "CORRAL_"
DEFAULT_SOURCE = "default"
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class ConfigError(Exception):
    """An invalid option value or config file. The message is one line for the user."""


@final
@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: Config
    #: Option name -> where its value came from ("default", "env CORRAL_X", ...).
    sources: Mapping[str, str]
    #: The config file that was read, if any.
    config_file: Path | None


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def cli_spelling(name: str) -> str:
    """How option ``name`` is given on the command line: its flag, or the APP argument."""
    return "APP argument" if name == "app" else flag_name(name)


def parse_value(name: str, raw: object, source: str) -> Any:
    """Turn one raw value into the option's type.

    Strings come from argv and the environment, typed values from TOML.

    Raises:
        ConfigError: naming the option and the source.
    """
    spec = SPECS[name]
    try:
        return _parse(spec, raw)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid value for {name} ({source}): {exc}") from None


def _parse(spec: OptionSpec, raw: object) -> Any:
    if spec.nullable and (raw is None or (isinstance(raw, str) and raw.lower() == "none")):
        return None
    kind = spec.kind
    if kind is Kind.LIST:
        if isinstance(raw, str):
            items = [part.strip() for part in raw.split(",")]
            return tuple(item for item in items if item)
        if isinstance(raw, (list, tuple)) and all(isinstance(item, str) for item in raw):
            return tuple(raw)
        raise ValueError(f"expected a list of strings, got {raw!r}")
    if kind is Kind.BOOL:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.lower() in _TRUE:
            return True
        if isinstance(raw, str) and raw.lower() in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if kind is Kind.INT or kind is Kind.FLOAT:
        number: int | float
        if isinstance(raw, bool):
            raise ValueError(f"expected a {kind.value}, got {raw!r}")
        if kind is Kind.INT:
            if isinstance(raw, float):
                raise ValueError(f"expected an integer, got {raw!r}")
            number = _number(int, raw, kind)
        else:
            number = _number(float, raw, kind)
            if number != number or number in (float("inf"), float("-inf")):
                raise ValueError(f"expected a finite number, got {raw!r}")
        if spec.minimum is not None and number < spec.minimum:
            raise ValueError(f"{number} is below the minimum of {spec.minimum:g}")
        return number
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {raw!r}")
    if kind is Kind.CHOICE and raw not in spec.choices:
        raise ValueError(f"{raw!r} is not one of {', '.join(spec.choices)}")
    return raw


def _number(convert: type[int] | type[float], raw: object, kind: Kind) -> int | float:
    if isinstance(raw, (int, float, str)):
        try:
            return convert(raw)
        except ValueError:
            pass
    raise ValueError(f"expected a{'n' if kind is Kind.INT else ''} {kind.value}, got {raw!r}")


def read_config_file(path: Path, *, section: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a TOML file, or the ``section`` table inside it (``tool.corral``).

    Raises:
        ConfigError: if the file cannot be read or parsed.
    """
    # Imported here: most starts read no file, and the parser costs 6 ms to import.
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised by the 3.10 CI run
        import tomli as tomllib
    try:
        with path.open("rb") as f:
            data: dict[str, Any] = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    for key in section:
        inner = data.get(key, {})
        if not isinstance(inner, dict):
            raise ConfigError(f"config file {path}: [{'.'.join(section)}] is not a table")
        data = inner
    return data


def load_config(
    cli: Mapping[str, object],
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    config_path: str | None = None,
) -> LoadedConfig:
    """Build the effective config.

    Args:
        cli: the options given on the command line (only those given), raw.
        env: the environment (default ``os.environ``).
        cwd: where to look for ``pyproject.toml`` (default the working directory).
        config_path: the ``--config`` file, if given on the command line.

    Raises:
        ConfigError: for the first invalid value or unknown key, naming it and its source.
    """
    env = os.environ if env is None else env
    cwd = Path.cwd() if cwd is None else cwd
    values: dict[str, Any] = {}
    sources: dict[str, str] = dict.fromkeys(SPECS, DEFAULT_SOURCE)

    file_path: Path | None = None
    file_values: dict[str, Any] = {}
    if config_path is None:
        config_path = env.get(ENV_PREFIX + "CONFIG") or None
    if config_path is not None:
        file_path = Path(config_path)
        section: tuple[str, ...] = ("tool", "corral") if file_path.name == "pyproject.toml" else ()
        file_values = read_config_file(file_path, section=section)
    elif (cwd / "pyproject.toml").is_file():
        candidate = cwd / "pyproject.toml"
        file_values = read_config_file(candidate, section=("tool", "corral"))
        if file_values:
            file_path = candidate

    for key, raw in file_values.items():
        name = key.replace("-", "_")
        if name not in SPECS:
            raise ConfigError(f"unknown option {key!r} in config file {file_path}")
        values[name] = parse_value(name, raw, f"config file {file_path}")
        sources[name] = f"config file {file_path}"

    for name, spec in SPECS.items():
        for var in (env_name(name), *spec.env_aliases):
            if var in env:
                values[name] = parse_value(name, env[var], f"env {var}")
                sources[name] = f"env {var}"
                break

    for name, raw in cli.items():
        if name not in SPECS:  # a programming error in the caller, not user input
            raise KeyError(name)
        source = f"command line {cli_spelling(name)}"
        values[name] = parse_value(name, raw, source)
        sources[name] = source

    if values.get("reload"):
        for name, value in RELOAD_DEFAULTS.items():
            if name not in values:
                values[name] = value
                sources[name] = f"{DEFAULT_SOURCE} with --reload"
    config = Config(**values)
    validate(config, sources)
    return LoadedConfig(config, sources, file_path)


def validate(config: Config, sources: Mapping[str, str]) -> None:
    """Checks that span options or need more than a type.

    Raises:
        ConfigError: naming the option and its source.
    """
    if not config.app:
        raise ConfigError("no application given: pass APP as module:attribute (or set app)")
    module, sep, attr = config.app.partition(":")
    if not sep or not module or not attr:
        raise ConfigError(
            f"invalid value for app ({sources['app']}): {config.app!r} is not module:attribute"
        )
    for text in config.bind:
        try:
            parse_bind(text)
        except BindError as exc:
            raise ConfigError(f"invalid value for bind ({sources['bind']}): {exc}") from None
    why = None if config.port is None else port_error(config.port)
    if why is not None:
        raise ConfigError(f"invalid value for port ({sources['port']}): {why}")
    for text in config.header:
        # The same parse and checks the worker applies (RFC 9110 section 5).
        try:
            header_from_text(text)
        except ResponseError:
            raise ConfigError(
                f"invalid value for header ({sources['header']}): {text!r} is not 'Name: value'"
            ) from None
    _validate_deployment(config, sources)


def parse_mode(text: str) -> int:
    """File permission bits written in octal (``660``, ``0660``, ``0o660``).

    Raises:
        ValueError: if ``text`` is not an octal number from 0 to 0o777.
    """
    digits = text.strip().lower().removeprefix("0o")
    try:
        mode = int(digits, 8)
    except ValueError:
        raise ValueError(f"{text!r} is not an octal mode such as 660") from None
    if not 0 <= mode <= 0o777:
        raise ValueError(f"{text!r} is not between 0 and 777")
    return mode


def _validate_deployment(config: Config, sources: Mapping[str, str]) -> None:
    """Modes, TLS files that go together, and proxy trust entries (see ``validate``)."""

    def fail(name: str, why: str) -> ConfigError:
        return ConfigError(f"invalid value for {name} ({sources[name]}): {why}")

    for name in ("uds_mode", "umask"):
        text = getattr(config, name)
        if text is not None:
            try:
                parse_mode(text)
            except ValueError as exc:
                raise fail(name, str(exc)) from None
    if config.ssl_certfile is None:
        for name in ("ssl_keyfile", "ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers"):
            if getattr(config, name) is not None:
                raise fail(name, "it needs --ssl-certfile")
    if config.ssl_cert_reqs != "none" and config.ssl_ca_certs is None:
        raise fail("ssl_cert_reqs", f"{config.ssl_cert_reqs!r} needs --ssl-ca-certs")
    for text in config.forwarded_allow_ips:
        if text in ("*", "unix"):
            continue
        try:
            ipaddress.ip_network(text, strict=False)
        except ValueError:
            why = f"{text!r} is not an IP address, a CIDR network, 'unix' or '*'"
            raise fail("forwarded_allow_ips", why) from None
