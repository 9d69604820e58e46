"""Errors a user can act on; each message names the file, row or config key at fault."""


class ConfigError(ValueError):
    """A config failed validation; the message names the offending key."""


class DataError(ValueError):
    """Bad input data; the message names the file, row and field."""


class VersioningError(RuntimeError):
    """DVC could not version the data; the message says what to do."""


class JudgeError(RuntimeError):
    """A judge call failed for good (bad request, missing key, retries exhausted)."""


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss or gradient); the message names the step."""


class OutputError(RuntimeError):
    """An output cannot be written (disk full, read-only folder); the message names the path."""
