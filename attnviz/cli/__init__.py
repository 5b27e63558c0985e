"""The command-line interface: `app.py` builds the Typer app, one small module per command."""
