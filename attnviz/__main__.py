"""`python -m attnviz` and the `attnviz` command: the entry point, safe to interrupt from its first instruction.

Importing the CLI (typer, rich and every command module) takes a few tenths of a second; a Ctrl-C, SIGTERM or
SIGHUP meanwhile ends in one line and exit code 128 + the signal's number, never in a traceback. This module
imports only the standard library and `attnviz.cli.signals` before it guards.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Run the command line (`attnviz.cli.app.main`) with Ctrl-C and termination signals handled from the start."""
    try:
        from attnviz.cli import signals

        signals.install()
        from attnviz.cli.app import main as run_cli

        run_cli()
    except KeyboardInterrupt as interrupt:
        from attnviz.cli import signals

        sys.exit(signals.clean_exit(interrupt))


if __name__ == "__main__":
    main()
