"""Imports of the ``text`` extra's packages, with an error that names the extra."""

from __future__ import annotations

import importlib
from types import ModuleType

EXTRA = "pip install 'stitching[text]'"


class MissingExtraError(ImportError):
    """An optional package of the ``text`` extra is not installed."""


def require(module: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtraError` saying what needs it and how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"{purpose} needs the optional package {module!r}, which is not installed; install the text "
            f"extra: {EXTRA}"
        ) from error
