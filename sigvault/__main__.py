"""``python -m sigvault``: the same command line as ``sigvault``."""

from sigvault.cli import main

if __name__ == "__main__":  # audit worker processes started with "spawn" import this module
    main()
