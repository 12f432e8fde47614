"""The PostgreSQL store's statements, read from this package's ``.sql`` files once, at import.

Each file holds the statements of one group of operations (``jobs.sql``,
``claims.sql``, …) as named blocks, the way River's ``dbsqlc`` and procrastinate's
``queries.sql`` do::

    -- name: job_get
    -- Why the statement reads as it does (comment lines are not sent).
    SELECT … FROM {s}.fq_jobs WHERE id = %s

``{s}`` stands for the store's quoted schema, filled in once per store
(:func:`bind`); ``%s`` and ``%b`` are psycopg's placeholders (text and binary
parameters). Whole-line ``--`` comments are dropped from the text sent to the
server, so a comment can never hold a stray placeholder. Statements that must be
put together at run time (a filter of optional conditions) stay in Python.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources

__all__ = ["FILES", "QUERIES", "bind", "parse", "read_sql"]

FILES = (
    "connection.sql", "schema.sql", "jobs.sql", "usage.sql", "flex.sql", "claims.sql", "triggers.sql", "history.sql",
    "workers.sql", "retention.sql",
    "completions.sql", "settings.sql",
    "alerts.sql",
)
"""The named-statement files, one per group of operations."""

_NAME = re.compile(r"--\s*name:\s*(\w+)\s*$")
_PACKAGE = __name__.rpartition(".")[0]


def read_sql(name: str) -> str:
    """The text of ``name``, a file inside this package (``"jobs.sql"``, ``"migrations/001_jobs.sql"``)."""
    return resources.files(_PACKAGE).joinpath(name).read_text(encoding="utf-8")


def parse(text: str, source: str) -> dict[str, str]:
    """The named statements of ``text`` (the contents of file ``source``): name -> SQL.

    Raises:
        ValueError: text before the first name, a name used twice, or a name
            with no statement.
    """
    statements: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        found = _NAME.match(line.strip())
        if found:
            name = found.group(1)
            if name in statements:
                raise ValueError(f"{source}:{number}: statement {name!r} is named twice")
            current = statements[name] = []
        elif line.strip().startswith("--") or not line.strip():
            continue
        elif current is None:
            raise ValueError(f"{source}:{number}: SQL before the first '-- name: …' line")
        else:
            current.append(line.rstrip())
    empty = [name for name, lines in statements.items() if not lines]
    if empty:
        raise ValueError(f"{source}: no statement under {empty!r}")
    return {name: "\n".join(lines) for name, lines in statements.items()}


def _load(files: tuple[str, ...]) -> dict[str, str]:
    queries: dict[str, str] = {}
    for file in files:
        for name, sql in parse(read_sql(file), file).items():
            if name in queries:
                raise ValueError(f"{file}: statement {name!r} is also named in another file")
            queries[name] = sql
    return queries


QUERIES: Mapping[str, str] = _load(FILES)
"""Every named statement of :data:`FILES`, with ``{s}`` still in place of the schema."""


def bind(schema: str) -> dict[str, str]:
    """:data:`QUERIES` for one store: ``{s}`` replaced by ``schema`` (already quoted)."""
    return {name: sql.replace("{s}", schema) for name, sql in QUERIES.items()}
