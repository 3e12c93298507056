"""Training of the sigvault embedding network (needs the `train` extra: torch, timm).

Imports the `sigvault` library (preprocessing, scoring, metrics); the library never imports this package.
"""
