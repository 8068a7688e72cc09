"""The project's images, built for real with docker or podman, and containers of them for the tests.

`built()` runs what a user runs: `scripts/base-image.sh` (the local stand-in for python:3.11-slim, only when the
container tool does not have that image) and `scripts/images.sh` (`make images`), under the kind.local/ names that
`make e2e` and the cluster tier use, without the PyTorch target (its CPU index is not reachable here). Containers
run on the host's network with the server bound to 127.0.0.1, carry a label, and are removed by label at the
start and the end of a session, so that a killed test leaves none behind for long.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
ADAPTER_IMAGE = "kind.local/service-builder-adapter:dev"
PREDICTOR_IMAGE = "kind.local/service-builder-predictor:dev"
LABEL = "service-builder-test=images"
BASE_IMAGE = "docker.io/library/python:3.11-slim"


class NoContainerTool(RuntimeError):
    pass


def _shell(function: str, *args: str) -> str:
    script = f'source {SCRIPTS / "container-tool.sh"}; {function} "$@"'
    proc = subprocess.run(["bash", "-c", script, "tool", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise NoContainerTool(proc.stderr.strip())
    return proc.stdout


def tool() -> str:
    """docker or podman, picked as scripts/images.sh picks it (CONTAINER_TOOL, else a running docker, else podman)."""
    return _shell("container_tool").strip()


def run_flags(name: str) -> list[str]:
    """Flags every `run` needs with this tool (podman: rlimits within the hard limits), and the host's network."""
    flags = _shell("container_flags", name).split()
    return flags if "--network=host" in flags else [*flags, "--network=host"]


@dataclass(frozen=True)
class Images:
    tool: str
    adapter: str
    predictor: str
    seconds: float  # how long the build took (the stand-in base included when it was made)


def built(log: Path) -> Images:
    name = tool()
    env = dict(os.environ, CONTAINER_TOOL=name)
    start = time.monotonic()
    with log.open("ab") as out:
        for argv, extra in (
            (["bash", str(SCRIPTS / "base-image.sh")], {"BASE_IMAGE": BASE_IMAGE}),
            (
                ["bash", str(SCRIPTS / "images.sh")],
                {"ADAPTER_IMAGE": ADAPTER_IMAGE, "PREDICTOR_IMAGE": PREDICTOR_IMAGE, "PYTORCH_IMAGE": ""},
            ),
        ):
            proc = subprocess.run(argv, env={**env, **extra}, stdout=out, stderr=subprocess.STDOUT, check=False)
            if proc.returncode != 0:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
                raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{tail}")
    return Images(name, ADAPTER_IMAGE, PREDICTOR_IMAGE, time.monotonic() - start)


def remove_ours(name: str) -> None:
    """Remove every container the tests started (by label), running or not."""
    ids = subprocess.run(
        [name, "ps", "-aq", "--filter", f"label={LABEL}"], capture_output=True, text=True, check=False
    ).stdout.split()
    if ids:
        subprocess.run([name, "rm", "-f", *ids], capture_output=True, check=False, timeout=120)


# Read-only root, no capabilities, no privilege escalation; the user is the image's own (never overridden). /tmp
# is the one writable place, as the pod's emptyDir is (the template's readOnlyRootFilesystem).
LOCKED_DOWN = ["--read-only", "--cap-drop=ALL", "--security-opt=no-new-privileges", "--tmpfs=/tmp:rw,mode=1777"]


def run(
    images: Images, image: str, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`run --rm` a locked-down container of `image` to completion; `args` go before the image (mounts, an
    entrypoint) and after `--` (the command)."""
    before, _, after = _split(args)
    envs = [f"--env={k}={v}" for k, v in (env or {}).items()]
    argv = [images.tool, "run", "--rm", f"--label={LABEL}", *run_flags(images.tool), *LOCKED_DOWN, *envs, *before]
    if images.tool == "podman":
        argv.append("--read-only-tmpfs=false")  # podman would add writable /tmp, /var/tmp and /run by itself
    return subprocess.run([*argv, image, *after], capture_output=True, text=True, timeout=timeout, check=False)


def _split(args: tuple[str, ...]) -> tuple[list[str], str, list[str]]:
    if "--" in args:
        i = args.index("--")
        return list(args[:i]), "--", list(args[i + 1 :])
    return list(args), "", []


@dataclass
class Container:
    tool: str
    id: str
    url: str

    def exec(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.tool, "exec", self.id, *argv], capture_output=True, text=True, check=False)

    def logs(self) -> str:
        proc = subprocess.run([self.tool, "logs", self.id], capture_output=True, text=True, check=False)
        return proc.stdout + proc.stderr


@contextlib.contextmanager
def serving(
    images: Images, image: str, port: int, *before: str, env: dict[str, str], lifetime: int = 600
) -> Iterator[Container]:
    """A detached locked-down container of `image` serving on 127.0.0.1:`port`, removed on exit; it stops itself
    after `lifetime` seconds at the latest (coreutils' timeout around the entrypoint), whatever happens to the test."""
    envs = [f"--env={k}={v}" for k, v in {**env, "HOST": "127.0.0.1", "PORT": str(port)}.items()]
    argv = [images.tool, "run", "-d", f"--label={LABEL}", *run_flags(images.tool), *LOCKED_DOWN, *envs]
    if images.tool == "podman":
        argv.append("--read-only-tmpfs=false")
    entry = subprocess.run(
        [images.tool, "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv += [*before, "--entrypoint=timeout", image, str(lifetime), *json.loads(entry)]
    cid = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout.strip()
    try:
        yield Container(images.tool, cid, f"http://127.0.0.1:{port}")
    finally:
        subprocess.run([images.tool, "rm", "-f", cid], capture_output=True, check=False, timeout=120)


def wait_ready(container: Container, path: str = "/v2/health/ready", timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(container.url + path, timeout=3) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        state = subprocess.run(
            [container.tool, "inspect", "--format", "{{.State.Running}}", container.id],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if state != "true":
            raise RuntimeError(f"the container stopped before it was ready:\n{container.logs()[-3000:]}")
        time.sleep(0.3)
    raise TimeoutError(f"not ready within {timeout}s:\n{container.logs()[-3000:]}")
