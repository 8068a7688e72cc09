"""Install a heavy, pinned extra (torch) once into a cache outside the repository and link it into the venv.

`python scripts/cached_extra.py custom_predictor/requirements-torch.txt` (run by `make install`) installs what
that file pins with `pip install --target` into
`~/.cache/service-builder/extras/<name>-<pins hash>-<python>-<platform>/` (or under SERVICE_BUILDER_CACHE), unless
a finished copy is there already, and writes `service-builder-<name>.pth` into the running interpreter's
site-packages so that the venv imports from it. The venv's own packages come first on sys.path; the cached
folder only adds what the venv lacks. A new pin is a new folder; old folders stay until removed by hand.
Prints what it cost: download and install time, size on disk.

Why: PyPI's torch for Linux is the CUDA build (the wheel and its nvidia-* dependencies are gigabytes; it runs on
the CPU too). Installing it into every fresh venv would cost minutes and gigabytes each time; a cached folder
costs them once per machine.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path


def cache_root() -> Path:
    if root := os.environ.get("SERVICE_BUILDER_CACHE"):
        return Path(root)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "service-builder"


def pins(requirements: Path) -> list[str]:
    lines = (line.split("#")[0].strip() for line in requirements.read_text().splitlines())
    return sorted(line for line in lines if line)


def folder_for(requirements: Path) -> Path:
    """The cache folder of this requirements file's pins, for this Python and platform."""
    wanted = pins(requirements)
    digest = hashlib.sha256("\n".join(wanted).encode()).hexdigest()[:12]
    name = requirements.stem.removeprefix("requirements-")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}-{platform.system().lower()}_{platform.machine()}"
    return cache_root() / "extras" / f"{name}-{digest}-{tag}"


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def install(requirements: Path) -> Path:
    """The finished cache folder for `requirements`, installing it first if needed."""
    target = folder_for(requirements)
    if (target / ".complete").is_file():
        print(f"cached_extra: {requirements.name}: using {target}")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    mb = 1024 * 1024
    with tempfile.TemporaryDirectory(prefix=f"{target.name}.", dir=target.parent) as tmp:
        wheels, site = Path(tmp) / "wheels", Path(tmp) / "site"
        pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
        t0 = time.perf_counter()
        subprocess.run([*pip, "download", "--no-cache-dir", "-d", str(wheels), "-r", str(requirements)], check=True)
        t1 = time.perf_counter()
        offline = ["--no-index", "--find-links", str(wheels)]
        subprocess.run([*pip, "install", *offline, "--target", str(site), "-r", str(requirements)], check=True)
        t2 = time.perf_counter()
        downloaded, installed = size_of(wheels), size_of(site)
        report = (
            f"{requirements.name}: {', '.join(pins(requirements))}: downloaded {downloaded / mb:,.0f} MB "
            f"({len(list(wheels.iterdir()))} wheels) in {t1 - t0:.0f} s, installed {installed / mb:,.0f} MB in "
            f"{t2 - t1:.0f} s\n"
        )
        (site / ".complete").write_text(report)
        if target.exists():  # an unfinished copy of an earlier attempt
            shutil.rmtree(target)
        site.rename(target)
    print(f"cached_extra: {report.strip()} -> {target}")
    return target


def link(requirements: Path, target: Path) -> Path:
    """Add `target` to this interpreter's sys.path through a .pth file in its site-packages."""
    name = requirements.stem.removeprefix("requirements-")
    pth = Path(sysconfig.get_paths()["purelib"]) / f"service-builder-{name}.pth"
    pth.write_text(f"{target}\n")
    return pth


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: cached_extra.py REQUIREMENTS_FILE", file=sys.stderr)
        return 2
    requirements = Path(argv[0])
    pth = link(requirements, install(requirements))
    print(f"cached_extra: {pth.name} -> {pth.read_text().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
