"""User-facing errors: each carries a one-line message that the CLI prints as is."""

from __future__ import annotations


class VidemoError(Exception):
    """An error the user can act on; the CLI prints ``videmo: error: <message>`` and exits 2."""


class VideoError(VidemoError):
    """The input is missing, not a video, has no video stream, or cannot be decoded."""


class ModelError(VidemoError):
    """A model file is missing or does not carry the videmo spec."""


class DataError(VidemoError):
    """Training or evaluation data is malformed."""


class OutputError(VidemoError):
    """The output location cannot be written, or exists and --overwrite was not given."""


class ClusterLost(VidemoError):
    """The Ray cluster given by address stopped answering in the middle of a run."""


class SettingsError(VidemoError):
    """A setting or job-file key has an invalid value."""


class DamagedVideoWarning(UserWarning):
    """``videmo.analyze`` read a damaged file as far as it decodes; the result says what is lost."""


def one_line(exc: BaseException) -> str:
    """The first line of an error, prefixed with its type unless it is a user error."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if isinstance(exc, VidemoError) else f"{type(exc).__name__}: {text}"
