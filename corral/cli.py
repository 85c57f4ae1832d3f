"""The ``corral`` command: argv -> options -> :func:`corral.main.serve`. No logic of its own.

Every option is generated from its declaration in :mod:`corral.config.options`; click
only splits argv. Values are parsed by the config loader, so a bad value reads the
same whether it came from argv, the environment or a file.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from corral.config import SPECS, ConfigError, Kind, load_config
from corral.config.loader import flag_name
from corral.lifecycle import ExitCode


class _SectionedCommand(click.Command):
    """``--help`` grouped by section, in declaration order, so it stays readable."""

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        sections: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            name = param.name or ""
            section = SPECS[name].section if name in SPECS else "General"
            sections.setdefault(section, []).append(record)
        for section, records in sections.items():
            with formatter.section(section):
                formatter.write_dl(records)


def _params() -> list[click.Parameter]:
    params: list[click.Parameter] = [click.Argument(["app"], required=False, metavar="APP")]
    for name, spec in SPECS.items():
        if name == "app":
            continue
        help_text = f"{spec.help} [env CORRAL_{name.upper()}]"
        flag = flag_name(name)
        if spec.kind is Kind.BOOL:
            decl = [f"{flag}/--no-{flag[2:]}"]
            params.append(click.Option(decl, default=None, help=help_text, show_default=False))
            continue
        metavar = spec.metavar or (
            "[" + "|".join(spec.choices) + "]" if spec.choices else spec.kind.value.upper()
        )
        params.append(
            click.Option(
                [flag, *spec.short],
                multiple=spec.kind is Kind.LIST,
                metavar=metavar,
                help=help_text,
            )
        )
    params += [
        click.Option(
            ["--config", "config_file"],
            metavar="FILE",
            help="TOML config file (default: [tool.corral] in ./pyproject.toml). "
            "[env CORRAL_CONFIG]",
        ),
        click.Option(
            ["--print-config"],
            is_flag=True,
            help="Print every effective option and where it came from, then exit.",
        ),
        click.Option(["--version"], is_flag=True, help="Print the version and exit."),
    ]
    return params


def _given(ctx: click.Context, values: dict[str, Any]) -> dict[str, object]:
    """The options actually given on the command line, raw."""
    given: dict[str, object] = {}
    for name in SPECS:
        value = values.get(name)
        source = ctx.get_parameter_source(name)
        if source is not click.core.ParameterSource.COMMANDLINE or value is None:
            continue
        if isinstance(value, tuple):
            if not value:
                continue
            value = list(value)
        given[name] = value
    return given


def _command(**values: Any) -> None:
    ctx = click.get_current_context()
    if values.pop("version"):
        from corral import __version__

        click.echo(f"corral {__version__}")
        return
    print_config = values.pop("print_config")
    config_file = values.pop("config_file")
    cli = _given(ctx, values)
    try:
        loaded = load_config(cli, config_path=config_file)
    except ConfigError as exc:
        click.echo(f"corral: error: {exc}", err=True)
        ctx.exit(ExitCode.USAGE)
    if print_config:
        from corral.config.report import render

        click.echo(render(loaded), nl=False)
        return
    from corral.main import serve

    ctx.exit(serve(loaded, cli, config_file))


command = _SectionedCommand(
    "corral",
    callback=_command,
    params=_params(),
    help="Serve the ASGI application APP (module:attribute) with pre-forked workers.",
    context_settings={"max_content_width": 100, "help_option_names": ["-h", "--help"]},
)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point. Usage errors exit 2, like every config error."""
    command.main(args=argv if argv is not None else sys.argv[1:], prog_name="corral")
