"""The one UID check every entry point uses (ingest, file meta, QIDO, C-FIND, WADO paths, Accept)."""

from __future__ import annotations

import pytest

from pacs_lite.uids import is_uid


@pytest.mark.parametrize("text", ["1", "1.2.840.10008.1.2.1", "1.2.840.0113654.2.70.1", "9" * 64,
                                  "1." + "2" * 62])
def test_well_formed(text: str) -> None:
    assert is_uid(text)


@pytest.mark.parametrize("text", ["", ".", "1.", ".1", "1..2", "1.2 ", " 1.2", "1.2\n", "1.2\r\n", "1.2\x00",
                                  "../../x", "1.2/3", "1,2", "1.2e3", "1.-2", "１.２", "9" * 65, "1." + "2" * 63])
def test_malformed(text: str) -> None:
    assert not is_uid(text)
