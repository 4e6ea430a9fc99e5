"""The one exception hierarchy of gpucost, each class carrying the exit code the CLI returns.

Exit codes (docs/operations.md): 0 success; 1 unexpected error; 2 usage or configuration error;
3 partial (some clusters failed, the rest kept); 4 authentication or permission refused;
5 another run holds the lock.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_AUTH = 4
EXIT_LOCKED = 5


class GpucostError(Exception):
    """Base of every error gpucost raises on purpose; `exit_code` is what the CLI returns."""

    exit_code = EXIT_UNEXPECTED


class ConfigError(GpucostError):
    """A configuration file, environment variable or option is wrong; the message names it."""

    exit_code = EXIT_USAGE


class AuthError(GpucostError):
    """The provider refused the API key (401) or its permissions (403)."""

    exit_code = EXIT_AUTH


class LockedError(GpucostError):
    """Another gpucost run holds the lock on this database."""

    exit_code = EXIT_LOCKED


class PartialRunError(GpucostError):
    """The run finished, but some clusters failed; what was read is kept."""

    exit_code = EXIT_PARTIAL


class ApiError(GpucostError):
    """The provider answered with an error or a response that does not follow the contract."""

    def __init__(self, message: str, *, status: int | None = None, body: bytes | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


class DataTestError(GpucostError):
    """A data test in sql/tests/ returned failing rows after a build."""
