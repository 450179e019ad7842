"""The retrieval plan: which transfer syntax goes out for what a caller accepts.

Every way out of the archive describes what its caller accepts as a list of
:class:`Option`, best first, and asks :func:`plan` what to send: WADO-RS instances,
frames and bulk data (from the ``Accept`` header), and C-GET and C-MOVE (from the
presentation contexts the peer accepted). Whether the stored bytes are acceptable as
they are is decided here and nowhere else; :class:`~pacs_lite.retrieval.RetrievalService`
carries the plan out.

What counts as "as stored" depends on what is sent (:class:`Carrier`): a whole object
must be in the very syntax asked for; a dataset handed to pynetdicom for a peer may be
in any little-endian native syntax, because pynetdicom rewrites the VR form losslessly
when it encodes the C-STORE; frames carry pixel data alone, and every native syntax
yields the same little-endian frame bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from pydicom.uid import ExplicitVRLittleEndian

from ..syntaxes import LITTLE_ENDIAN_NATIVE, NATIVE


class Carrier(Enum):
    """What goes out, which decides the stored syntaxes that count as acceptable."""

    OBJECT = "object"
    DATASET = "dataset"
    FRAMES = "frames"


@dataclass(frozen=True)
class Option:
    """One alternative a caller accepts.

    Attributes
    ----------
    syntaxes
        Transfer syntaxes accepted as they are; ``None`` accepts any (the stored one).
    targets
        Syntaxes to transcode into, best first, when the stored one is not accepted.
    or_as_stored
        Send the stored syntax when none of ``targets`` can be produced: for a default
        the caller did not ask for by name (WADO-RS without ``transfer-syntax``).
    """

    syntaxes: frozenset[str] | None
    targets: tuple[str, ...] = ()
    or_as_stored: bool = False

    @classmethod
    def exactly(cls, *syntaxes: str, or_as_stored: bool = False) -> Option:
        """Accept ``syntaxes``; transcode into them, in this order, otherwise."""
        return cls(frozenset(syntaxes), tuple(dict.fromkeys(syntaxes)), or_as_stored)


#: Any syntax: the stored bytes as they are.
AS_STORED = Option(None)


@dataclass(frozen=True)
class Step:
    """One way to answer: the option it satisfies and the syntax to produce (``None``: as stored)."""

    option: int
    syntax: str | None


def _same_bytes(stored: str, wanted: str, carrier: Carrier) -> bool:
    if stored == wanted:
        return True
    if carrier is Carrier.FRAMES:
        return stored in NATIVE and wanted in NATIVE
    if carrier is Carrier.DATASET:
        return stored in LITTLE_ENDIAN_NATIVE and wanted in LITTLE_ENDIAN_NATIVE
    return False


def accepts_as_stored(option: Option, stored: str, carrier: Carrier) -> bool:
    """Whether ``option`` takes what is stored in ``stored`` without transcoding."""
    return option.syntaxes is None or any(_same_bytes(stored, s, carrier) for s in option.syntaxes)


def plan(stored: str, options: Sequence[Option], carrier: Carrier) -> list[Step]:
    """The ways to answer, to be tried in order (transcoding may fail); ``[]`` if there is none.

    The stored bytes as they are when any option takes them; otherwise each option's
    targets in order, and last the stored syntax if an option allows that.
    """
    for index, option in enumerate(options):
        if accepts_as_stored(option, stored, carrier):
            return [Step(index, None)]
    steps = [Step(index, target) for index, option in enumerate(options) for target in option.targets]
    fallback = next((index for index, option in enumerate(options) if option.or_as_stored), None)
    if fallback is not None:
        steps.append(Step(fallback, None))
    return steps


def sent_syntax(syntax: str, carrier: Carrier) -> str:
    """The syntax the bytes go out in: native frames are always explicit VR little endian."""
    if carrier is Carrier.FRAMES and syntax in NATIVE:
        return ExplicitVRLittleEndian
    return syntax
