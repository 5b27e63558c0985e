"""`python -m attnviz` runs the command-line interface."""

from attnviz.cli.app import main

if __name__ == "__main__":
    main()
