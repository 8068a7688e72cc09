"""Fixtures of the inference log's tests: a real S3-compatible server (SeaweedFS, built from the Go module proxy
and cached like the control plane) for the whole module that asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.objectstore.server import S3Server, seaweedfs


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with seaweedfs(tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
