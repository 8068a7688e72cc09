"""docs/security.md names every auth setting of both deployables, so a new one cannot go undocumented."""

from __future__ import annotations

import re
from pathlib import Path

from adapter.settings import AdapterSettings
from custom_predictor.settings import Settings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()


def test_every_auth_setting_is_documented() -> None:
    predictor = [f.upper() for f in Settings.model_fields if f.startswith("auth_")]
    adapter = [
        f.upper()
        for f in AdapterSettings.model_fields
        if f.startswith(("predictor_auth", "predictor_token", "predictor_api_key")) or f == "predictor_service_account"
    ]
    assert len(predictor) > 10 and len(adapter) > 10
    missing = [name for name in predictor + adapter if not re.search(rf"(?<![A-Z_]){name}(?![A-Z_])", DOC)]
    assert missing == []
