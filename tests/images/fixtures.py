"""The `images` fixture (imported by tests/conftest.py): both images built for real (tests/images/containers.py),
once per session; the image tests and the cluster tier use it.

Without docker or podman the image tests are skipped, except in CI (`tests.tiers.in_ci`), where they fail: .ci/run
installs podman, so a missing tool there is a broken setup, not a reason to pass.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.images.containers import Images, NoContainerTool, built, remove_ours, tool
from tests.tiers import in_ci


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    try:
        name = tool()
    except NoContainerTool as e:
        if in_ci():
            pytest.fail(f"CI needs docker or podman for the image tests: {e}")
        pytest.skip(f"no container tool: {e}")
    remove_ours(name)  # whatever a killed session left
    result = built(tmp_path_factory.mktemp("images") / "build.log")
    try:
        yield result
    finally:
        remove_ours(name)
