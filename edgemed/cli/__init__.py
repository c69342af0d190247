"""The `edgemed` command. Subcommands load lazily; no runtime is imported for `--help`.

This is the only place where an EdgemedError becomes a message: one line on stderr, non-zero exit.
"""

from __future__ import annotations

import importlib
import sys

import click

from edgemed import __version__
from edgemed.errors import EdgemedError, environment_problem

# name -> "module:attribute"; each module imports only click and light edgemed modules at top level.
COMMANDS = {
    "train": "edgemed.cli.train:train",
    "export": "edgemed.cli.export:export",
    "demo": "edgemed.cli.demo:demo",
    "build-engine": "edgemed.cli.build_engine:build_engine",
    "keygen": "edgemed.cli.bundle:keygen",
    "bundle": "edgemed.cli.bundle:bundle",
    "verify": "edgemed.cli.bundle:verify",
    "predict": "edgemed.cli.bundle:predict",
    "bench": "edgemed.cli.bench:bench",
    "compress": "edgemed.cli.compress:compress",
    "study": "edgemed.cli.study:study",
    "serve": "edgemed.cli.serve:serve",
    "audit": "edgemed.cli.serve:audit",
    "fleet": "edgemed.cli.fleet:fleet",
    "sweep": "edgemed.cli.sweep:sweep",
    "monitor": "edgemed.cli.monitor:monitor",
}


NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module_name, _, attr = COMMANDS[name].partition(":")
        return getattr(importlib.import_module(module_name), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgemed")
def cli() -> None:
    """Take compact medical image classifiers to edge hardware and prove they still work there."""


def error_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"edgemed: error: {text}"


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the CLI, turning user errors into one line and an exit code."""
    restore = handle_sigterm()
    try:
        rc = cli.main(args=argv, prog_name="edgemed", standalone_mode=False)
    except EdgemedError as exc:
        click.echo(error_line(exc), err=True)
        sys.exit(exc.exit_code)
    except (OSError, MemoryError) as exc:
        problem = environment_problem(exc)
        if problem is None:
            raise
        click.echo(error_line(problem), err=True)
        sys.exit(problem.exit_code)
    except NO_ARGS_IS_HELP as exc:  # bare `edgemed`: show the help
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # usage errors: the same one line, naming the option
        click.echo(error_line(exc.format_message()), err=True)
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo(interrupted_line(sys.argv[1:] if argv is None else argv), err=True)
        sys.exit(130)
    finally:
        restore()
    sys.exit(rc if isinstance(rc, int) else 0)


# Commands whose output directory keeps every finished row (JSONL) and resumes from it.
RESUMABLE = frozenset({"bench", "study", "sweep"})


def interrupted_line(argv: list[str]) -> str:
    """What an interrupt left: nothing, or for a resumable command the rows finished so far."""
    command = next((a for a in argv if not a.startswith("-")), "")
    if command in RESUMABLE:
        return (
            "edgemed: interrupted; the rows finished so far are kept in the output directory: "
            "run the same command with --resume to continue"
        )
    return "edgemed: interrupted; no partial output was kept"


def handle_sigterm():
    """SIGTERM behaves like Ctrl-C (cleanup runs, exit 130); returns a function restoring it."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    return lambda: signal.signal(signal.SIGTERM, previous)
