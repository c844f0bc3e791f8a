"""The library's exceptions.

Each message is one line about data, files, models or configurations (what, where, how
to fix), never about command-line flags: a Python user never passed any.  The command
layer (``cli.py`` and the ``commands`` package) prints any :class:`CpmError` as one
line on stderr with exit status 2, adding the flag that supplied the value where that
helps.
"""

from __future__ import annotations


class CpmError(Exception):
    """Base of every error the library raises on purpose."""


class DataError(CpmError, ValueError):
    """A data file or folder that cannot be read or written as needed."""


class ModelError(CpmError, ValueError):
    """A model, run folder or weight file that cannot be used as asked."""


class ConfigError(CpmError, ValueError):
    """An invalid or inconsistent configuration (profile, training or model settings)."""
