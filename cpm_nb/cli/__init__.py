"""The ``cpm-nb`` command line: :func:`main` is its entry point."""

from cpm_nb.cli.app import main

__all__ = ["main"]
