"""`tempo`: the Typer application and the entry point that maps errors to exit codes.

Exit codes: 0 success, 1 run-time failure (TempoError), 2 bad usage (click usage
errors and UsageError), 130 interrupted. Tracebacks only with --debug / TEMPO_DEBUG=1.
"""

from __future__ import annotations

import os
import sys

import typer
from typer.core import TyperGroup, TyperOption
from typer.main import get_command

try:  # typer >= 0.26 vendors click as typer._click
    from typer._click import core as click_core
    from typer._click import exceptions as click_exc
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import core as click_core
    from click import exceptions as click_exc

from tempo_cli import __version__
from tempo_cli.cli.data import data_app
from tempo_cli.cli.download import download
from tempo_cli.cli.embed import embed
from tempo_cli.cli.evaluate import eval_app
from tempo_cli.cli.explain import explain_app
from tempo_cli.cli.export import export
from tempo_cli.cli.pretrain import pretrain
from tempo_cli.cli.segment import segment
from tempo_cli.cli.study import study
from tempo_cli.errors import Interrupted, TempoError, UsageError

#: The commands in the order of the work, as `tempo --help` lists them: the whole
#: comparison first, then its steps.
ORDER = (
    "study", "download", "data", "pretrain", "eval", "embed", "explain", "segment", "export",
)  # fmt: skip
HELP_OPTIONS = ["-h", "--help"]


class _Group(TyperGroup):
    """`tempo`: its commands listed in ORDER (Typer lists commands before groups)."""

    def list_commands(self, ctx: click_core.Context) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda n: ORDER.index(n) if n in ORDER else len(ORDER))


app = typer.Typer(
    name="tempo",
    cls=_Group,
    help="Learn image features from video by temporal coherence, and measure what they buy.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": HELP_OPTIONS},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tempo {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Learn image features from video by temporal coherence, and measure what they buy."""


app.command("download")(download)
app.command("embed")(embed)
app.command("export")(export)
app.command("pretrain")(pretrain)
app.command("segment")(segment)
app.command("study")(study)
app.add_typer(data_app, name="data")
app.add_typer(eval_app, name="eval")
app.add_typer(explain_app, name="explain")


def command() -> click_core.Command:
    """The click command of `app`, its flags shown without a value type in --help (Typer
    shows `<bool>` beside a switch that takes no value)."""
    root = get_command(app)
    todo = [root]
    while todo:
        cmd = todo.pop()
        ctx = click_core.Context(cmd, help_option_names=HELP_OPTIONS)
        for param in [*cmd.params, cmd.get_help_option(ctx)]:
            if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
                param.metavar = ""
        todo.extend(getattr(cmd, "commands", {}).values())
    return root


def _error(message: str) -> None:
    sys.stderr.write(f"tempo: error: {message}\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("TEMPO_DEBUG", "").lower() in {"1", "true", "yes"}
    code = 0
    try:
        rv = command().main(args=args, prog_name="tempo", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except typer.Exit as e:
        code = e.exit_code
    except click_exc.ClickException as e:
        if debug:
            raise
        if type(e).__name__ == "NoArgsIsHelpError":  # help was printed already
            sys.exit(2)
        ctx = getattr(e, "ctx", None)  # a subcommand's path names it: "tempo eval: ..."
        where = f"{ctx.command_path}: " if ctx is not None and ctx.parent is not None else ""
        _error(f"{where}{e.format_message()} (see --help)")
        code = 2
    except UsageError as e:
        if debug:
            raise
        _error(str(e))
        code = 2
    except (Interrupted, KeyboardInterrupt, typer.Abort) as e:
        if debug:
            raise
        _error(str(e) or "interrupted")
        code = 130
    except TempoError as e:
        if debug:
            raise
        _error(str(e))
        code = 1
    except Exception as e:  # the last line of defence for users
        if debug:
            raise
        _error(f"{type(e).__name__}: {e} (rerun with --debug for the traceback)")
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
