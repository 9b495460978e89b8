"""The process's log lines: human text by default, or one JSON object per line
(``LIVEROOM_LOG_FORMAT=json``) for a log shipper.

Every JSON line carries ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``msg``, the process's
``role`` and ``pid``, and what the call site added with ``extra=`` (a connection's ``conn``
id, its ``room`` and ``user``, a close ``code``); an exception comes as ``exc``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

FORMATS = ("text", "json")
TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
"""Attributes every record has; anything else on a record came from ``extra=``."""


class JsonFormatter(logging.Formatter):
    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role
        self.pid = os.getpid()

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            "role": self.role,
            "pid": self.pid,
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value if isinstance(value, int | float | bool | None) else str(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(fmt: str, role: str, level: str | int | None = None) -> None:
    """Use ``fmt`` (``text`` or ``json``) for every handler of the root logger."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.StreamHandler())
    if level is not None:
        root.setLevel(level.upper() if isinstance(level, str) else level)
    formatter: logging.Formatter
    if fmt == "json":
        formatter = JsonFormatter(role)
    else:
        formatter = logging.Formatter(TEXT)
        formatter.converter = time.gmtime
    for handler in root.handlers:
        handler.setFormatter(formatter)
