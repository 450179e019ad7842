"""DIMSE status codes: one registry for the SCP, ingest and STOW-RS failure reasons.

The names follow PS3.7 Annex C and the service annexes of PS3.4. One code has one
name even where services word it differently: 0xC000 is "cannot understand" for
C-STORE and "unable to process" for C-FIND/C-GET/C-MOVE, 0xA900 is "data set does not
match SOP class" for C-STORE and "identifier does not match SOP class" for queries.
STOW-RS reports the same codes as FailureReason (PS3.18 I.2.2).
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    """A DIMSE status code (PS3.7 C.4)."""

    SUCCESS = 0x0000
    PENDING = 0xFF00
    CANCEL = 0xFE00
    #: General failure (PS3.7 C.4.2): also STOW-RS's "referenced study does not match"
    PROCESSING_FAILURE = 0x0110
    DUPLICATE_SOP_INSTANCE = 0x0111
    NO_SUCH_SOP_INSTANCE = 0x0112
    INVALID_ARGUMENT_VALUE = 0x0115
    CLASS_INSTANCE_CONFLICT = 0x0119
    NO_SUCH_ACTION_TYPE = 0x0123
    NOT_AUTHORIZED = 0x0124
    OUT_OF_RESOURCES = 0xA700
    DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    CANNOT_UNDERSTAND = 0xC000

    @property
    def is_failure(self) -> bool:
        """Whether the code is a failure (not success, pending, cancel or a warning)."""
        return self not in (Status.SUCCESS, Status.PENDING, Status.CANCEL)
