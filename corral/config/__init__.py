"""Configuration: the frozen option model, its loading with provenance, bind parsing."""

from __future__ import annotations

from corral.config.binds import BindError, BindSpec, effective_binds, parse_bind
from corral.config.loader import ConfigError, LoadedConfig, load_config
from corral.config.options import SPECS, Config, Kind, OptionSpec

__all__ = [
    "SPECS",
    "BindError",
    "BindSpec",
    "Config",
    "ConfigError",
    "Kind",
    "LoadedConfig",
    "OptionSpec",
    "effective_binds",
    "load_config",
    "parse_bind",
]
