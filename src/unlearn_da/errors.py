"""Exceptions that the CLI turns into one clear line instead of a traceback."""


class PipelineError(Exception):
    """Base class: bad input or a bad file that a user can fix."""


class ConfigError(PipelineError):
    """A config value is missing, mistyped or out of range."""


class DataError(PipelineError):
    """A data set cannot be found or has the wrong content."""


class ArtifactError(PipelineError):
    """A pipeline file is missing, truncated, corrupted or stale."""
