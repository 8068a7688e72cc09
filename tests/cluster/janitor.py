"""`python -m tests.cluster.janitor RUN_DIR PARENT_PID`: puts the host back when the cluster tier ends, however.

Started by the node (`node.py`) in a session of its own, so that nothing that kills the test process and its
children kills it too. It waits until the test process is gone (killed or crashed) or until the node asks for
it by creating `RUN_DIR/stop`; then it ends every process of the run and restores what `RUN_DIR/host.json`
recorded (`host.restore`), and writes what is still different to `RUN_DIR/restored.json` (an empty list when the
host is as it was). Its log is `RUN_DIR/logs/janitor.log`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from tests.cluster.host import Snapshot, restore


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except OSError:
        return False


def main(run_dir: Path, parent: int) -> int:
    state = json.loads((run_dir / "node.json").read_text())
    while _alive(parent) and not (run_dir / "stop").exists():
        time.sleep(0.2)
    why = "asked to stop" if (run_dir / "stop").exists() else f"test process {parent} is gone"
    print(f"janitor: {why}; restoring the host", flush=True)
    left = restore(Snapshot.load(run_dir / "host.json"), run_dir, state["bridge"])
    (run_dir / "restored.json").write_text(json.dumps(left))
    print(f"janitor: done, {len(left)} difference(s) left: {left}", flush=True)
    return 0 if not left else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), int(sys.argv[2])))
