"""The `hedit` command line: one module per pipeline stage, each command parsing its options and calling
one function of the Python API. Every error is one ``hedit: error:`` line and a non-zero exit."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sys
import threading

import click

from hedit import __version__
from hedit.errors import HeditError, Interrupted, redact


class _Group(click.Group):
    """Prints a HeditError (or a usage error, an OS error, a signal) as one line on stderr, no traceback."""

    ORDER = (
        "identify",
        "collect",
        "filter",
        "features",
        "probe",
        "origin",
        "sweep",
        "tune",
        "edit",
        "export-adapter",
        "verify",
        "push",
        "run",
        "architectures",
    )

    def list_commands(self, ctx):
        """Commands in pipeline order, not alphabetical."""
        return sorted(self.commands, key=lambda c: (self.ORDER.index(c) if c in self.ORDER else len(self.ORDER), c))

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """Usage errors too are one ``hedit: error:`` line (exit 2), not click's usage block."""
        prog_name = "hedit"  # error lines name the command as people type it, also under test runners
        _check_cwd()
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.UsageError as e:
            hint = f" (`{e.ctx.command_path} --help` lists the options)" if e.ctx is not None else ""
            _fail(e.format_message() + hint, e.exit_code)
        except click.ClickException as e:
            _fail(e.format_message(), e.exit_code)
        except click.Abort:
            _fail("aborted", 1)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        with _signals_as_exceptions():
            try:
                return super().invoke(ctx)
            except HeditError as e:
                _fail(str(e), 1)
            except OSError as e:
                _fail(_os_error(e), 1)
            except KeyboardInterrupt:
                _fail("interrupted (SIGINT); no output was left half-written", 130)
            except Interrupted as e:
                _fail(f"interrupted ({e}); no output was left half-written", 128 + e.signum)
            except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
                raise
            except Exception as e:  # a bug: still one line, the traceback on request
                if os.environ.get("HEDIT_DEBUG"):
                    raise
                _fail(
                    f"internal error ({type(e).__name__}: {_first_line(e)}); rerun with HEDIT_DEBUG=1 for the "
                    "traceback and report it",
                    2,
                )


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [""])[0][:300]


def _os_error(e: OSError) -> str:
    if e.errno == errno.ENOSPC:
        return (
            f"no space left on the device{f' writing {e.filename}' if e.filename else ''}; nothing was left "
            "half-written"
        )
    where = f": {e.filename}" if e.filename else ""
    return f"{e.strerror or _first_line(e)}{where}"


def _fail(message: str, code: int) -> None:
    click.echo(f"hedit: error: {redact(' '.join(message.split()))}", err=True)
    sys.exit(code)


@contextlib.contextmanager
def _signals_as_exceptions():
    """SIGTERM and SIGHUP raise ``Interrupted`` in the main thread (SIGINT already raises
    KeyboardInterrupt), so temporary outputs are removed before hedit exits."""

    def handler(signum, frame):
        raise Interrupted(signum)

    old = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hedit")
def main():
    """Find H-neurons in chat LLMs and write edited models that carry the fix with them."""


def _check_cwd() -> None:
    """A deleted working directory is one line, checked before the commands (and torch, whose math
    library aborts with a fatal error in one) are imported."""
    try:
        os.getcwd()
    except OSError:
        click.echo(
            "hedit: error: the working directory no longer exists (deleted?); cd to a folder that does", err=True
        )
        sys.exit(1)


def _register() -> None:
    from hedit.cli import check, edit, find, measure, run, ship

    for module in (find, measure, edit, check, ship, run):
        for command in module.COMMANDS:
            main.add_command(command)


_check_cwd()
_register()
