"""Human-readable views of the option model: ``--print-config`` and ``docs/options.md``."""

from __future__ import annotations

import json
from typing import Any

from corral.config.loader import LoadedConfig, env_name, flag_name
from corral.config.options import DEFAULTS, SPECS, Kind


def _toml(value: Any) -> str:
    if value is None:
        return '"none"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value)


def render(loaded: LoadedConfig) -> str:
    """Every effective value, as TOML one could paste into a config file, with its source."""
    lines = []
    if loaded.config_file is not None:
        lines.append(f"# config file: {loaded.config_file}")
    for name, spec in SPECS.items():
        value = getattr(loaded.config, name)
        shown = '"(hidden)"' if spec.secret and value is not None else _toml(value)
        lines.append(f"{name} = {shown}  # {loaded.sources[name]}")
    return "\n".join(lines) + "\n"


def render_docs() -> str:
    """The options reference, generated from the declarations (CI checks it is current)."""
    out = [
        "# Options reference",
        "",
        "Generated from `corral/config/options.py` by `python -m corral.config.report`;",
        "do not edit by hand. Every option can be given on the command line, as an",
        "environment variable, or as a key in the config file (`--config FILE.toml`, or",
        "`[tool.corral]` in `./pyproject.toml`). Precedence: defaults < file < environment",
        "< command line. `corral --print-config` shows the effective values and their sources.",
        "",
    ]
    section = ""
    for name, spec in SPECS.items():
        if spec.section != section:
            section = spec.section
            out += [
                f"## {section}",
                "",
                "| option | env / file key | default | meaning |",
                "|---|---|---|---|",
            ]
        flag = "APP (argument)" if name == "app" else flag_name(name)
        if spec.kind is Kind.BOOL:
            flag = f"{flag} / --no-{flag[2:]}"
        flags = ", ".join((f"`{flag}`", *(f"`{s}`" for s in spec.short)))
        env = ", ".join((f"`{env_name(name)}`", *(f"`{a}`" for a in spec.env_aliases)))
        meaning = spec.help
        if spec.choices:
            meaning += " One of: " + ", ".join(f"`{c}`" for c in spec.choices) + "."
        default = _toml(getattr(DEFAULTS, name))
        out.append(f"| {flags} | {env} / `{name}` | `{default}` | {meaning} |")
        next_section = None
        names = list(SPECS)
        index = names.index(name)
        if index + 1 < len(names):
            next_section = SPECS[names[index + 1]].section
        if next_section != section:
            out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render_docs(), end="")
