"""Builds the tests' S3-compatible server, SeaweedFS's `weed`, from the Go module proxy, like the control plane.

The wrapper module `tests/controlplane/go/seaweedfs/` pins SeaweedFS (a pseudo-version: its tags are not semver) and
repeats the one `replace` of its go.mod, which `go install pkg@version` refuses. The binary lands outside the
repository, beside the control plane's, in `$SERVICE_BUILDER_CACHE/controlplane/seaweedfs-<version>-<go.sum hash>/`
(`tests.controlplane.build` does the building and the locking); a warm call only checks that it is there.

Why SeaweedFS and not MinIO: MinIO's server repository is archived (no fixes since 2026), SeaweedFS is maintained
and Apache-2.0, and `weed mini` runs master, volume, filer and S3 gateway in one process.

`python -m tests.objectstore.build` builds it if missing and prints the path.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from tests.controlplane import build as cp

SEAWEEDFS = cp.Component("seaweedfs", "github.com/seaweedfs/seaweedfs", {"weed": "github.com/seaweedfs/seaweedfs/weed"})


def ensure(log: list[str] | None = None) -> Path:
    """The path of the `weed` binary, built first if it is not in the cache."""
    return cp.build(SEAWEEDFS, [] if log is None else log) / "weed"


def main() -> int:
    start = time.monotonic()
    log: list[str] = []
    try:
        weed = ensure(log)
    except RuntimeError as e:
        print(f"objectstore: {e}", file=sys.stderr)
        return 1
    for line in log:
        print(f"objectstore: {line}")
    print(f"objectstore: {weed} ready in {time.monotonic() - start:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
