"""What the cluster tier changes on the host, recorded before it starts and put back when it ends.

A kubelet, containerd and the CNI bridge plugin change the machine they run on: sysctls (`vm.overcommit_memory`,
`kernel.panic`, `kernel.panic_on_oops`, ...; the bridge plugin turns on `net.ipv4.ip_forward`), iptables chains
and rules (KUBE-FIREWALL, the canary chains) and the nft tables behind them, mounts (the kubelet's root, pod
volumes, containerd's snapshots, `/run/netns` and each pod's network namespace), the `kubepods` cgroups under each
controller, a bridge and its veths, and processes outside any process group the tests own (containerd's shims and
the containers under them).

`Snapshot.take()` records the host; `restore(snapshot, run_dir)` ends every process of the run (by cgroup and by
the run folder in its command line), unmounts what appeared under the run folder and `/run/netns`, deletes the new
network namespaces, cgroups, links, iptables rules and chains, and nft tables, and writes the sysctls back. It is
idempotent and runs both from the test process and from the janitor (`janitor.py`) when the test process is
killed. `Snapshot.diff(other)` names every difference, for the test that checks the host is left as found.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.bridge.bridge-nf-call-iptables",
)
TABLES = ("filter", "nat", "mangle", "raw")
CGROUP_ROOT = Path("/sys/fs/cgroup")
NETNS = Path("/run/netns")
CGROUP_NAMES = ("kubepods", "kubepods.slice")
RUN_PREFIX = "/tmp/sb"  # every run folder of the tier starts so (short: containerd's socket path is limited)
# Only what the tier can have made is recorded: other programs on a shared machine (podman, say) may change
# mounts, links and namespaces of their own meanwhile.
MOUNT_ROOTS = (RUN_PREFIX, str(NETNS), "/var/lib/kubelet", "/run/containerd")
LINK_PREFIXES = ("sbtest", "veth", "cni")


def _sysctl_path(name: str) -> Path:
    return Path("/proc/sys") / name.replace(".", "/")


def _out(argv: list[str]) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    return proc.stdout if proc.returncode == 0 else ""


def _rules(tool: str, table: str) -> list[str]:
    return [line for line in _out([tool, "-w", "5", "-t", table, "-S"]).splitlines() if line]


def _mounts() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(MOUNT_ROOTS):
            points.append(point)
    return points


def _cgroups() -> list[str]:
    found = []
    for controller in sorted(CGROUP_ROOT.iterdir()):
        for name in CGROUP_NAMES:
            if (controller / name).is_dir():
                found.append(str(controller / name))
    return found


def _links() -> list[str]:
    names = (line.split(":")[1].strip().split("@")[0] for line in _out(["ip", "-o", "link"]).splitlines())
    return sorted(n for n in names if n.startswith(LINK_PREFIXES))


@dataclass
class Snapshot:
    sysctls: dict[str, str] = field(default_factory=dict)
    iptables: dict[str, list[str]] = field(default_factory=dict)  # "iptables/filter" -> rules, as -S prints them
    nft_tables: list[str] = field(default_factory=list)
    mounts: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)
    netns: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)

    @classmethod
    def take(cls) -> Snapshot:
        return cls(
            sysctls={n: _sysctl_path(n).read_text().strip() for n in SYSCTLS if _sysctl_path(n).exists()},
            iptables={f"{tool}/{t}": _rules(tool, t) for tool in ("iptables", "ip6tables") for t in TABLES},
            nft_tables=sorted(line for line in _out(["nft", "list", "tables"]).splitlines() if line),
            mounts=sorted(set(_mounts())),
            cgroups=_cgroups(),
            netns=sorted(p.name for p in NETNS.iterdir() if p.name.startswith("cni-")) if NETNS.is_dir() else [],
            links=_links(),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path) -> Snapshot:
        return cls(**json.loads(path.read_text()))

    def diff(self, after: Snapshot) -> list[str]:
        """Every difference between this snapshot (before) and `after`, one line each."""
        out = []
        for name, value in self.sysctls.items():
            if after.sysctls.get(name) != value:
                out.append(f"sysctl {name}: {value} -> {after.sysctls.get(name)}")
        for key, rules in self.iptables.items():
            new = after.iptables.get(key, [])
            out += [f"{key}: + {r}" for r in new if r not in rules]
            out += [f"{key}: - {r}" for r in rules if r not in new]
        for label, old, new in (
            ("nft table", self.nft_tables, after.nft_tables),
            ("mount", self.mounts, after.mounts),
            ("cgroup", self.cgroups, after.cgroups),
            ("netns", self.netns, after.netns),
            ("link", self.links, after.links),
        ):
            out += [f"{label} + {x}" for x in new if x not in old]
            out += [f"{label} - {x}" for x in old if x not in new]
        return out


def _pids_in(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    for procs in cgroup.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            pids.update(int(p) for p in procs.read_text().split())
    return pids


def _pids_naming(run_dir: Path) -> set[int]:
    """Processes whose command line names the run folder (containerd, its shims, the kubelet, ...)."""
    mine = {os.getpid(), os.getppid()}
    found = set()
    needle = str(run_dir).encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in mine:
            continue
        with contextlib.suppress(OSError):
            if needle in (proc / "cmdline").read_bytes():
                found.add(int(proc.name))
    return found


def _kill(pids: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def end_processes(before: Snapshot, run_dir: Path, timeout: float = 20) -> set[int]:
    """SIGKILL every process of the run: those in new kubepods cgroups and those naming the run folder. Returns
    what is still alive after `timeout` seconds (nothing, normally)."""
    deadline = time.monotonic() + timeout
    left: set[int] = set()
    while time.monotonic() < deadline:
        left = _pids_naming(run_dir)
        for cg in _cgroups():
            if cg not in before.cgroups:
                left |= _pids_in(Path(cg))
        left -= {os.getpid()}
        if not left:
            return left
        _kill(left)
        time.sleep(0.2)
    return left


def _unmount_new(before: Snapshot, run_dir: Path) -> None:
    roots = (str(run_dir), str(NETNS))
    for _ in range(5):  # stacked mounts show once per layer
        new = [m for m in _mounts() if m not in before.mounts and m.startswith(roots)]
        if not new:
            return
        for point in sorted(set(new), key=len, reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True, check=False, timeout=30)


def _remove_cgroup_tree(root: Path) -> None:
    for path in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            path.rmdir()
    with contextlib.suppress(OSError):
        root.rmdir()


def _restore_iptables(before: Snapshot) -> None:
    for key, rules in before.iptables.items():
        tool, table = key.split("/")
        now = _rules(tool, table)
        # Rules first (they may jump to new chains), then the new chains themselves.
        for rule in reversed([r for r in now if r.startswith("-A ") and r not in rules]):
            subprocess.run([tool, "-w", "5", "-t", table, "-D", *rule.split()[1:]], capture_output=True, check=False)
        new_chains = [r.split()[1] for r in now if r.startswith("-N ") and r not in rules]
        for chain in new_chains:
            subprocess.run([tool, "-w", "5", "-t", table, "-F", chain], capture_output=True, check=False)
        for chain in new_chains:
            subprocess.run([tool, "-w", "5", "-t", table, "-X", chain], capture_output=True, check=False)
    # iptables-nft leaves the tables it made for those chains behind, empty: remove new tables holding no rule,
    # or only the kubelet's chains.
    for line in _out(["nft", "list", "tables"]).splitlines():
        if line and line not in before.nft_tables:
            family, name = line.split()[1:3]
            listing = _out(["nft", "list", "table", family, name])
            if "KUBE-" in listing or not _has_rules(listing):
                subprocess.run(["nft", "delete", "table", family, name], capture_output=True, check=False)


def _has_rules(listing: str) -> bool:
    for line in listing.splitlines():
        text = line.strip()
        if text and not text.startswith(("table ", "chain ", "type ", "policy ", "}")):
            return True
    return False


def restore(before: Snapshot, run_dir: Path, bridge: str) -> list[str]:
    """Put the host back as `before` recorded it; returns what is still different (empty when all went back)."""
    end_processes(before, run_dir)
    _unmount_new(before, run_dir)
    if NETNS.is_dir():
        for ns in NETNS.iterdir():
            if ns.name.startswith("cni-") and ns.name not in before.netns:
                subprocess.run(["ip", "netns", "delete", ns.name], capture_output=True, check=False)
                with contextlib.suppress(OSError):
                    ns.unlink()
        _unmount_new(before, run_dir)
        if str(NETNS) not in before.mounts:
            with contextlib.suppress(OSError):
                NETNS.rmdir()  # only when empty: another program's namespaces stay
    for cg in _cgroups():
        if cg not in before.cgroups:
            _remove_cgroup_tree(Path(cg))
    if bridge not in before.links:
        subprocess.run(["ip", "link", "delete", bridge], capture_output=True, check=False)
    _restore_iptables(before)
    for name, value in before.sysctls.items():
        path = _sysctl_path(name)
        with contextlib.suppress(OSError):
            if path.read_text().strip() != value:
                path.write_text(value)
    return before.diff(Snapshot.take())
