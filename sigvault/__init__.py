"""sigvault: offline handwritten-signature verification for bank back offices.

The library API lives in :mod:`sigvault.vault` (``Vault``); the command line in :mod:`sigvault.cli`.
This package imports nothing heavy, so ``sigvault --help`` stays instant.
"""

__version__ = "0.2.0"
