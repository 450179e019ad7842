"""DICOM UIDs: the one check of their form, used wherever a UID comes in.

Loose on purpose: PS3.5 9.1 forbids leading zeros in a component, but real modalities
send them, and refusing their images would lose data. What is refused is anything that
is not digits separated by single dots, or longer than 64 characters (a trailing
newline included: the check matches the whole text).
"""

from __future__ import annotations

import re

MAX_UID_LENGTH = 64
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def is_uid(text: str) -> bool:
    """Whether ``text`` is a well-formed UID: digits and dots, no empty component, at most 64 characters."""
    return len(text) <= MAX_UID_LENGTH and _UID.fullmatch(text) is not None
