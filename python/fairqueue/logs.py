"""The worker command's log output: text for people, or one JSON object per line
for a log pipeline (``fairqueue worker --log-format json``).

fairqueue's own log calls pass what they are about as ``extra`` fields
(``job_id``, ``org``, ``kind``, ``attempt``, ``worker``): the JSON format keeps
them as fields of their own, so a pipeline can filter one org's or one job's
lines without parsing messages; a job's final failure is logged at ERROR with
its exception, a retried attempt at WARNING.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import Any

from fairqueue import tracing
from fairqueue.errors import InvalidArgument

__all__ = ["LOG_FORMATS", "JsonFormatter", "configure"]

LOG_FORMATS = ("text", "json")
"""The formats ``fairqueue worker --log-format`` offers."""

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# What every LogRecord has: anything else on a record came in through ``extra=``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, every ``extra`` field, ``trace_id``/``span_id`` while a span is
    current, and ``exc_type``/``exc_message``/``traceback`` when it carries an exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        ids = tracing.current_ids()
        if ids is not None:
            entry["trace_id"], entry["span_id"] = ids
        if record.exc_info and record.exc_info[1] is not None:
            entry["exc_type"] = type(record.exc_info[1]).__name__
            entry["exc_message"] = str(record.exc_info[1])
            entry["traceback"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra that is not JSON (a path, a datetime) is shown rather than losing the line.
        return json.dumps(entry, default=str)


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Sends log records at ``level`` and above to stderr in ``log_format`` ("text" or
    "json"), unless the application configured the root logger itself (its setup wins)."""
    if log_format not in LOG_FORMATS:
        raise InvalidArgument(f"invalid log format {log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
