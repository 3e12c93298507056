"""``python -m sigvault``: the same command line as ``sigvault``."""

from sigvault.cli import main

main()
