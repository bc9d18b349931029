"""The ``specwise`` command line: one group, thin commands, errors handled in one place.

Each command lives in ``specwise/commands/<name>.py`` and only parses options, calls the
library and prints. A ``SpecwiseError`` or a bad option becomes one ``Error: ...`` line on
stderr and exit status 1; a traceback reaching a user is a bug.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click

from specwise import __version__
from specwise.commands.demo import demo_command
from specwise.commands.export import export_command
from specwise.commands.model import model_command
from specwise.commands.probe import probe_command
from specwise.commands.recommend import recommend_command
from specwise.commands.report import report_command
from specwise.commands.rules import rules_command
from specwise.commands.run import run_command
from specwise.commands.scrape import scrape_command
from specwise.commands.simulate import sim_command
from specwise.errors import SpecwiseError

__all__ = ["cli", "main"]

_EPILOG = """\b
Examples:
  specwise demo                               # simulated fleet + controller, closed loop
  specwise model --alpha 0.7 --cost 0.05      # does speculation pay, and at which k?
  specwise model --alpha 0.2 --cost 0.5       # a losing drafter: recommends k = 0
  specwise recommend --url http://127.0.0.1:8000/metrics --cost eagle
  specwise run --config config/specwise.example.toml
  specwise export --prometheus http://prom:9090 --range -7d..now --out series.csv
"""


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog=_EPILOG,
)
@click.version_option(__version__, prog_name="specwise")
def cli() -> None:
    """specwise: decide with arithmetic whether vLLM speculative decoding pays, and which
    num_speculative_tokens (k, 0 included) to run."""


cli.add_command(model_command)
cli.add_command(run_command)
cli.add_command(sim_command)
cli.add_command(demo_command)
cli.add_command(recommend_command)
cli.add_command(scrape_command)
cli.add_command(report_command)
cli.add_command(rules_command)
cli.add_command(export_command)
cli.add_command(probe_command)


def _one_line(message: str) -> str:
    """Control characters a value smuggled into a message, escaped: an error is one line."""
    return "".join(ch if ch.isprintable() or ch == " " else repr(ch)[1:-1] for ch in message)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; return the exit status (0 ok, 1 error) instead of raising."""
    try:
        status = cli.main(
            args=list(argv) if argv is not None else None,
            prog_name="specwise",
            standalone_mode=False,
        )
    except SpecwiseError as exc:
        click.echo(f"Error: {_one_line(str(exc))}", err=True)
        return 1
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return 1
    except click.ClickException as exc:
        click.echo(f"Error: {_one_line(exc.format_message())}", err=True)
        return 1
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a file the user named could not be read or written
        where = f" {exc.filename}" if exc.filename is not None else ""
        click.echo(
            f"Error: cannot use{where} ({exc.strerror or exc}); check the path and its permissions",
            err=True,
        )
        return 1
    return status if isinstance(status, int) else 0


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
