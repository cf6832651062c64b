"""Errors a user can meet. Each carries a one-line message that says what happened and what to do next;
the CLI prints it without a traceback. `code` follows the CloudTrail exception names where one exists."""

from __future__ import annotations


class LakeError(Exception):
    code = "LakeError"


class NotFound(LakeError):
    code = "EventDataStoreNotFoundException"


class AlreadyExists(LakeError):
    code = "EventDataStoreAlreadyExistsException"


class InvalidParameter(LakeError):
    code = "InvalidParameterException"


class TerminationProtected(LakeError):
    code = "EventDataStoreTerminationProtectedException"


class InactiveStore(LakeError):
    code = "InactiveEventDataStoreException"


class ReadOnlyError(LakeError):
    """Events are immutable: nothing updates or deletes an individual event."""

    code = "UnsupportedOperationException"


class SqlError(LakeError):
    """A query that cannot run: bad syntax, an unknown table or column, an unsupported construct, or a runtime
    error of the query itself (a failed CAST). `line`/`col` (1-based) point at the construct when known."""

    code = "InvalidQueryStatementException"

    def __init__(self, message: str, line: int | None = None, col: int | None = None):
        self.message = message
        self.line = line
        self.col = col
        where = f" (line {line}, column {col})" if line else ""
        super().__init__(f"{message}{where}")

    def caret(self, sql: str) -> str:
        """The offending source line with a caret under the column, or "" when the position is unknown."""
        if not self.line:
            return ""
        lines = sql.splitlines() or [""]
        if self.line > len(lines):
            return ""
        text = lines[self.line - 1]
        return f"{text}\n{' ' * max((self.col or 1) - 1, 0)}^"


class SegmentIntegrityError(LakeError):
    """A segment's bytes differ from the SHA-256/size its manifest entry records: whatever was about to use
    them (delivery, compaction, retention) stops without writing, committing or signing anything."""

    code = "SegmentIntegrityError"


class QueryCancelled(LakeError):
    code = "QueryCancelledException"
