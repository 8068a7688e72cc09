"""A real S3-compatible server for tests: SeaweedFS's `weed mini` (master, volume, filer and S3 gateway in one
process) on 127.0.0.1, its data in a temporary folder, built by `tests.objectstore.build`.

`seaweedfs(root)` starts it with one bucket and one access key, waits until the bucket answers, and stops it at
the end; `S3Server.stop()` and `.start()` take it down and bring it back on the same ports and data (a sink that
is down, then recovers). Telemetry, WebDAV, the admin UI and the Iceberg/Lance catalogs are off; every port is
a free one.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.objectstore.build import ensure
from tests.servers import free_port, stop_group

ACCESS_KEY = "inference-log-test"
SECRET_KEY = "inference-log-test-secret"


@dataclass
class S3Server:
    root: Path
    bucket: str
    weed: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def filesystem(self):
        from pyarrow import fs

        return fs.S3FileSystem(
            access_key=ACCESS_KEY,
            secret_key=SECRET_KEY,
            endpoint_override=f"127.0.0.1:{self.ports['s3']}",
            scheme="http",
            region="us-east-1",
        )

    def start(self, timeout: float = 90.0) -> None:
        if not self.ports:
            names = ("master", "volume", "filer", "s3", "admin")
            names += tuple(f"{n}.grpc" for n in names)
            self.ports = {n: free_port() for n in names}
        p = self.ports
        args = [
            str(self.weed),
            "mini",
            f"-dir={self.root}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-bucket={self.bucket}",
            "-master.telemetry=false",
            "-webdav=false",
            "-admin.ui=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-admin.port.legacy=0",  # the admin server always runs: on our ports, not its fixed ones
            *(f"-{name}.port={p[name]}" for name in ("master", "volume", "filer", "s3", "admin")),
            *(f"-{name}.port.grpc={p[name + '.grpc']}" for name in ("master", "volume", "filer", "s3", "admin")),
        ]
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(self.root),
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }
        log = open(self.root / "weed.log", "ab")  # the child keeps its own descriptor
        self.proc = subprocess.Popen(
            args, cwd=self.root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        from pyarrow import fs

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                if self.filesystem().get_file_info(self.bucket).type == fs.FileType.Directory:
                    return
            except OSError as e:
                last = e
            time.sleep(0.3)
        raise TimeoutError(f"SeaweedFS S3 did not serve bucket {self.bucket} within {timeout}s: {last}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc, timeout=20)
            self.proc = None

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "weed.log").read_text(errors="replace").splitlines()[-lines:])
        return ""


@contextlib.contextmanager
def seaweedfs(root: Path, bucket: str = "inference") -> Iterator[S3Server]:
    """A running SeaweedFS S3 server with `bucket`, stopped on exit."""
    root.mkdir(parents=True, exist_ok=True)
    server = S3Server(root=root, bucket=bucket, weed=ensure())
    server.start()
    try:
        yield server
    finally:
        server.stop()
