"""The host is left as found by the cluster tier, also when the test process is killed.

A control plane and a node with a running pod start in a child process (`standalone.py`); the child is killed
with SIGKILL, as a CI timeout or a Ctrl-C'd terminal would. Its processes die with it (PR_SET_PDEATHSIG), the
janitor it started ends the rest (containerd's shims and the containers under them) and puts the host back:
sysctls, iptables rules and chains, nft tables, mounts, cgroups, network namespaces, the bridge. Nothing of the
run may be left, compared with a snapshot taken before.

It runs before the session's node starts (both would use the same bridge and the same kubepods cgroups).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.cluster.host import RUN_PREFIX, Snapshot, _pids_naming
from tests.controlplane.build import NodePaths

# The child starts a control plane and a node (and builds the node binaries if they are missing): 20 min at most.
pytestmark = pytest.mark.timeout(1200)

ROOT = Path(__file__).resolve().parents[2]


def test_a_killed_run_leaves_the_host_as_it_was(cluster_paths: NodePaths, tmp_path: Path) -> None:
    before = Snapshot.take()
    root = Path(f"{RUN_PREFIX}kill-{os.getpid()}")
    root.mkdir()
    log = (tmp_path / "child.log").open("w+")
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.cluster.standalone", str(root)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line.strip() == "READY", Path(log.name).read_text()[-3000:]
        during = Snapshot.take()
        assert before.diff(during), "a running node changes the host: the check below would prove nothing"
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)
        restored = root / "node" / "restored.json"
        deadline = time.monotonic() + 180
        while not restored.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert restored.exists(), (root / "node" / "logs" / "janitor.log").read_text()[-3000:]
        time.sleep(1)  # the janitor exits right after writing its result
        assert before.diff(Snapshot.take()) == []
        assert _pids_naming(root) == set()
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        if not any(line.split()[4].startswith(str(root)) for line in Path("/proc/self/mountinfo").open()):
            shutil.rmtree(root, ignore_errors=True)
