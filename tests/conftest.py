"""Shared pytest fixtures for PACS-lite.

Keep this file small: fixtures that need real helpers import them from
``tests.support``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.seaweedfs import SeaweedFS


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One ``weed mini`` S3 server for the whole session, on loopback and free ports.

    Tests that stop or kill it must start it again before they finish (see
    ``test_seaweedfs_restart_keeps_objects``); isolate data with a unique bucket each.
    """
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
        yield server
    finally:
        server.close()
