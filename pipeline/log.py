"""Logging for people (`text`) and for log shippers (`json`, one object per line).

Under cron (no TTY) the pipeline says one summary line per stage; on a terminal it adds a progress
bar. Nothing here ever formats the API key: it is not passed to loggers at all, and every line
goes through `pipeline.redact` on its way out, so that a key the provider echoes (or any secret in
an exception's text) never reaches stderr, cron mail or a log shipper.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from pipeline.redact import redact_text

LOGGER_NAME = "gpucost"


class RedactingFormatter(logging.Formatter):
    """A text formatter whose every line is redacted (`pipeline.redact.redact_text`)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact_text(super().format(record))


def _redacted(value: Any) -> Any:
    return redact_text(value) if isinstance(value, str) else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra` fields.

    Every text field is redacted before it is encoded (redacting the encoded line could break
    its JSON escapes)."""

    _STANDARD = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in self._STANDARD and not key.startswith("_"):
                payload[key] = _redacted(value)
        if record.exc_info:
            payload["error"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(payload, default=lambda v: redact_text(str(v)))


def configure_logging(fmt: str = "text", *, verbose: bool = False) -> logging.Logger:
    """Send gpucost's log to stderr in `fmt` (`text` or `json`); returns the package logger."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(RedactingFormatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    return logger


def get_logger(name: str | None = None) -> logging.Logger:
    """The package logger, or a child of it (`gpucost.client`)."""
    return logging.getLogger(LOGGER_NAME if not name else f"{LOGGER_NAME}.{name}")
