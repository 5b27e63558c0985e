"""Test helper: run attnviz's CLI in-process (typer's CliRunner: its stderr is not a terminal, as in a log file)."""

from __future__ import annotations

from typer.testing import CliRunner

from attnviz.cli.app import app

runner = CliRunner()
TINY = [
    "--size",
    "64",
    "--train-size",
    "32",
    "--val-size",
    "16",
    "--batch-size",
    "16",
    "--workers",
    "0",
    "--device",
    "cpu",
]
"""Options of a fit that finishes in seconds: 32 small scenes an epoch, on the CPU."""


def run(*args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `attnviz ARGS...`."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr
