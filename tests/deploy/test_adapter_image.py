"""What adapter/Dockerfile copies is enough to build and run the adapter: every COPY source exists
and passes the build-context filter (adapter/Dockerfile.dockerignore), the project builds into a
wheel from those files alone, and the template path the image sets is where the template lands."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from tests.deploy.conftest import REPO

DOCKERFILE = REPO / "adapter" / "Dockerfile"


def _copies() -> list[tuple[str, str]]:
    out = []
    for line in DOCKERFILE.read_text().splitlines():
        m = re.match(r"^COPY (?!--from)(.+) (\S+)$", line.strip())
        if m:
            out += [(src, m.group(2)) for src in m.group(1).split()]
    return out


def _sent(path: str) -> bool:
    """Whether BuildKit sends `path` with adapter/Dockerfile.dockerignore (last matching rule wins)."""
    sent = True
    for rule in (REPO / "adapter" / "Dockerfile.dockerignore").read_text().splitlines():
        rule = rule.strip()
        if not rule or rule.startswith("#"):
            continue
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        if fnmatch.fnmatch(path, pattern) or path.startswith(pattern + "/"):
            sent = negate
    return sent


def test_every_copy_source_exists_and_is_in_the_build_context() -> None:
    copies = _copies()
    assert {src for src, _ in copies} >= {"pyproject.toml", "README.md", "adapter/", "inferenceservice_templates/"}
    for src, _ in copies:
        assert (REPO / src).exists(), src
        assert _sent(src.rstrip("/")), f"{src} is filtered out of the build context"
    assert _sent("adapter/cli.py") and _sent("inferenceservice_templates/inferenceservice.yaml")
    assert not _sent(".venv/bin/python") and not _sent("tests/conftest.py")


def test_template_path_points_at_the_copied_template() -> None:
    env = re.search(r"TEMPLATE_PATH=(\S+)", DOCKERFILE.read_text())
    assert env, "the image must tell the adapter where its template is"
    dest = dict((src.rstrip("/"), d) for src, d in _copies())["inferenceservice_templates"]
    relative = Path(env.group(1)).relative_to(dest.rstrip("/"))
    assert (REPO / "inferenceservice_templates" / relative).is_file()


def test_the_project_builds_from_the_copied_files_alone(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for path, _ in _copies():
        if path.endswith("/"):
            if path.rstrip("/") == "adapter":  # the build stage copies only the package
                shutil.copytree(REPO / path, src / path, ignore=shutil.ignore_patterns("__pycache__", "Dockerfile*"))
        elif not path.startswith("inferenceservice_templates"):
            shutil.copy(REPO / path, src / path)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "w"),
            ".",
        ],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = (tmp_path / "w").glob("service_builder-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "adapter/cli.py" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "service-builder = adapter.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
