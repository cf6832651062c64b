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
