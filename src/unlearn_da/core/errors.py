"""Exceptions that the CLI turns into one clear line instead of a traceback."""

from typing import Any

#: characters of a value quoted in an error message
MAX_QUOTED = 80


def short(value: Any, limit: int = MAX_QUOTED) -> str:
    """``repr(value)``, cut to ``limit`` characters with the full length named: a message quotes
    a value, never a 35 MB expansion of it."""
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


class PipelineError(Exception):
    """Base class: bad input or a bad file that a user can fix."""


class ConfigError(PipelineError):
    """A config value is missing, mistyped or out of range."""


class DataError(PipelineError):
    """A data set cannot be found or has the wrong content."""


class ArtifactError(PipelineError):
    """A pipeline file is missing, truncated, corrupted or stale."""


class MissingField(ArtifactError, KeyError):
    """A pipeline file (manifest, sidecar, metrics) lacks a field its reader needs.

    Also a ``KeyError``, so code that tests for a field by catching one keeps working; its text
    names the file and the field instead of a bare key.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
