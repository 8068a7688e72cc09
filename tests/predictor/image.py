"""What each predictor image holds, from its requirement files and the installed metadata (no Docker engine here).

`requirements(target)` are the pinned requirements an image target installs (base: requirements.txt; pytorch:
that and requirements-torch.txt); `closure(target)` every distribution they pull in (transitively, with the
extras asked for; the CPU build of torch needs none of the CUDA packages PyPI's build pulls in);
`declaration(target)` the entry adapter/predictor_images.json must hold for it.
`python -m tests.predictor.image` rewrites adapter/predictor_images.json from them.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "custom_predictor"
FILES = {"base": ["requirements.txt"], "pytorch": ["requirements.txt", "requirements-torch.txt"]}
FLAVORS = {"base": ["sklearn", "xgboost", "lightgbm"], "pytorch": ["sklearn", "xgboost", "lightgbm", "pytorch"]}
CATALOG = ROOT / "adapter" / "predictor_images.json"
_CUDA_ONLY = ("nvidia-", "cuda-", "triton")
"""Dependencies of PyPI's CUDA build of torch that its CPU build (the image's) does not have."""


def requirements(target: str = "base") -> list[Requirement]:
    out = []
    for name in FILES[target]:
        lines = (line.split("#")[0].strip() for line in (PACKAGE / name).read_text().splitlines())
        out += [Requirement(line) for line in lines if line]
    return out


def closure(target: str = "base", *, cpu_build: bool = True) -> set[str]:
    """The listed distributions and, transitively, everything they require (with the extras asked for).
    `cpu_build`: without the CUDA packages of PyPI's torch (the image has the CPU build; this venv may not)."""
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    todo = [(r.name, frozenset(r.extras)) for r in requirements(target)]
    while todo:
        name, extras = todo.pop()
        cuda = cpu_build and canonicalize_name(name).startswith(_CUDA_ONLY)
        if (canonicalize_name(name), extras) in seen or cuda:
            continue
        seen.add((canonicalize_name(name), extras))
        names.add(canonicalize_name(name))
        for raw in metadata.requires(name) or []:
            req = Requirement(raw)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in extras or {""}):
                todo.append((req.name, frozenset(req.extras)))
    return names


def declaration(target: str) -> dict[str, Any]:
    """Flavors, and libraries: `name==version` for the pinned ones, the bare name for what they pull in."""
    pinned = {canonicalize_name(r.name): next(iter(r.specifier)).version for r in requirements(target)}
    libraries = [f"{n}=={pinned[n]}" if n in pinned else n for n in sorted(closure(target))]
    return {"flavors": FLAVORS[target], "libraries": libraries}


def catalog() -> dict[str, Any]:
    return {target: declaration(target) for target in FILES}


if __name__ == "__main__":
    CATALOG.write_text(json.dumps(catalog(), indent=1) + "\n")
    print(f"wrote {CATALOG}", file=sys.stderr)
