"""The retrieval plan: one decision of what goes out, for every way out of the archive."""

from __future__ import annotations

import pytest
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from pacs_lite.retrieval.plan import AS_STORED, Carrier, Option, Step, accepts_as_stored, plan, sent_syntax


def test_any_syntax_sends_what_is_stored() -> None:
    assert plan(JPEGLSLossless, [AS_STORED], Carrier.OBJECT) == [Step(0, None)]


def test_a_later_option_that_takes_the_stored_bytes_wins_over_transcoding_for_an_earlier_one() -> None:
    options = [Option.exactly(JPEG2000Lossless), Option.exactly(JPEGLSLossless)]
    assert plan(JPEGLSLossless, options, Carrier.OBJECT) == [Step(1, None)]


def test_transcoding_targets_follow_the_order_of_preference_then_the_lenient_fallback() -> None:
    options = [Option.exactly(ExplicitVRLittleEndian, or_as_stored=True), Option.exactly(RLELossless)]
    assert plan(JPEGLSLossless, options, Carrier.OBJECT) == [
        Step(0, ExplicitVRLittleEndian), Step(1, RLELossless), Step(0, None)]


def test_nothing_acceptable_is_an_empty_plan() -> None:
    assert plan(JPEGLSLossless, [], Carrier.DATASET) == []


@pytest.mark.parametrize(("stored", "accepted", "carrier", "as_stored"), [
    # a whole object must be in the very syntax asked for
    (ImplicitVRLittleEndian, ExplicitVRLittleEndian, Carrier.OBJECT, False),
    (ExplicitVRLittleEndian, ExplicitVRLittleEndian, Carrier.OBJECT, True),
    # pynetdicom rewrites the VR form of a dataset: little endian native syntaxes are one
    (ImplicitVRLittleEndian, ExplicitVRLittleEndian, Carrier.DATASET, True),
    (DeflatedExplicitVRLittleEndian, ImplicitVRLittleEndian, Carrier.DATASET, True),
    (ExplicitVRBigEndian, ExplicitVRLittleEndian, Carrier.DATASET, False),
    (JPEGLSLossless, ExplicitVRLittleEndian, Carrier.DATASET, False),
    # frames carry pixels alone: every native syntax gives the same little endian frames
    (ExplicitVRBigEndian, ExplicitVRLittleEndian, Carrier.FRAMES, True),
    (ImplicitVRLittleEndian, ExplicitVRLittleEndian, Carrier.FRAMES, True),
    (JPEGLSLossless, ExplicitVRLittleEndian, Carrier.FRAMES, False),
    (JPEGLSLossless, JPEGLSLossless, Carrier.FRAMES, True),
])
def test_what_counts_as_stored_depends_on_what_is_sent(stored: str, accepted: str, carrier: Carrier,
                                                        as_stored: bool) -> None:
    assert accepts_as_stored(Option.exactly(accepted), stored, carrier) is as_stored
    steps = plan(stored, [Option.exactly(accepted)], carrier)
    assert steps == ([Step(0, None)] if as_stored else [Step(0, accepted)])


def test_native_frames_go_out_as_explicit_little_endian() -> None:
    assert sent_syntax(ExplicitVRBigEndian, Carrier.FRAMES) == ExplicitVRLittleEndian
    assert sent_syntax(ImplicitVRLittleEndian, Carrier.FRAMES) == ExplicitVRLittleEndian
    assert sent_syntax(JPEGLSLossless, Carrier.FRAMES) == JPEGLSLossless
    assert sent_syntax(ImplicitVRLittleEndian, Carrier.OBJECT) == ImplicitVRLittleEndian
