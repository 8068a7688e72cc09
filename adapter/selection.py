"""Which version of a registered model should be served: alias first, then tag, then legacy stage.

Pure: takes what the registry snapshot holds, returns a `Selection` or None (nothing to serve).
"""

from __future__ import annotations

from collections.abc import Iterable

from adapter.types import ModelInfo, Selection, VersionInfo


def _highest(versions: Iterable[VersionInfo]) -> VersionInfo | None:
    valid = [v for v in versions if v.version.isdigit()]
    return max(valid, key=lambda v: v.number, default=None)


def select(
    model: ModelInfo,
    tagged: Iterable[VersionInfo],
    *,
    alias: str,
    tag: str,
    stage: str,
) -> Selection | None:
    """The version the alias points to; else the highest version carrying the tag; else the stage's."""
    if alias and alias in model.aliases:
        return Selection(version=str(model.aliases[alias]), reason=f"alias:{alias}")
    best = _highest(v for v in tagged if v.name == model.name)
    if best is not None:
        return Selection(version=best.version, reason=f"tag:{tag}")
    if stage:
        staged = _highest(v for v in model.stage_versions if v.stage.lower() == stage.lower())
        if staged is not None:
            return Selection(version=staged.version, reason=f"stage:{stage}")
    return None
