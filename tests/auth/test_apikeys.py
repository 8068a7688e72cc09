"""API keys: `keygen` (the real CLI), the keys file as a mounted Secret (kubelet's symlink swap), rotation without
a restart, a broken file failing closed, hostile headers, the allow-list, and the settings that must refuse to
start. No network: the keys file is the only upstream of this mode."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from custom_predictor.auth import ANONYMOUS, Caller
from custom_predictor.auth.allow import AllowList, AllowListError
from custom_predictor.auth.apikeys import STAT_EVERY, generate
from tests.auth.conftest import HOSTILE_HEADERS, settings

REPO = Path(__file__).resolve().parents[2]


def keygen(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "custom_predictor.auth", "keygen", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )


class SecretVolume:
    """A folder laid out as kubelet mounts a Secret: `keys -> ..data/keys`, `..data -> ..<timestamp>`, and an
    edit of the Secret swaps `..data` atomically to a new timestamped folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.generation = 0
        (root / "keys").symlink_to("..data/keys")

    @property
    def path(self) -> str:
        return str(self.root / "keys")

    def write(self, text: str) -> None:
        self.generation += 1
        folder = self.root / f"..2026_12_07_{self.generation}"
        folder.mkdir()
        (folder / "keys").write_text(text)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(folder.name)
        os.replace(tmp, self.root / "..data")


def test_keygen_prints_a_key_and_its_entry_and_appends_to_a_private_file(tmp_path: Path) -> None:
    p = keygen("notebook")
    assert p.returncode == 0, p.stderr
    key, line = p.stdout.splitlines()
    assert key.startswith("sbk_notebook_") and len(key) == len("sbk_notebook_") + 43
    assert line.startswith("notebook sha256:") and key not in line
    keys = tmp_path / "keys"
    first = keygen("demo", "--keys-file", str(keys))
    second = keygen("demo", "--keys-file", str(keys))
    assert first.returncode == second.returncode == 0
    assert keys.stat().st_mode & 0o777 == 0o600
    text = keys.read_text()
    assert len(text.splitlines()) == 2 and first.stdout.strip() not in text and second.stdout.strip() not in text
    bad = keygen("Not_An_Id")
    assert bad.returncode == 2 and "lowercase" in bad.stderr and "Traceback" not in bad.stderr


def test_a_key_from_the_file_is_the_caller_by_either_header(build: Any, tmp_path: Path) -> None:
    key, line = generate("notebook")
    (tmp_path / "keys").write_text(f"# the team's keys\n\n{line}  # added today\n")
    b = build(auth_modes="apikey", auth_api_keys_file=str(tmp_path / "keys"))
    expected = Caller("apikey:notebook", "apikey")
    assert b.check({"Authorization": f"Bearer {key}"}) == expected
    assert b.check({"authorization": f"bearer  {key} "}) == expected
    assert b.check({"X-API-Key": key}) == expected
    assert b.metric("predictor_auth_api_keys") == 1 and b.metric("predictor_auth_api_keys_file_ok") == 1
    assert b.metric("predictor_auth_checks_total", method="apikey", outcome="allowed") == 3
    other, _ = generate("notebook")  # same id, another secret
    assert b.refused({"x-api-key": other}).status == 401
    assert b.refused({"x-api-key": key[:-1] + ("A" if key[-1] != "A" else "B")}).status == 401
    assert b.refused({"authorization": "Bearer eyJhbGciOiJSUzI1NiJ9.e30.c2ln"}).status == 401  # no JWT mode here
    assert b.metric("predictor_auth_checks_total", method="apikey", outcome="unauthenticated") == 2


@pytest.mark.parametrize("case", list(HOSTILE_HEADERS))
def test_hostile_headers_are_401(build: Any, tmp_path: Path, case: str) -> None:
    _, line = generate("demo")
    (tmp_path / "keys").write_text(line + "\n")
    b = build(auth_modes="apikey", auth_api_keys_file=str(tmp_path / "keys"))
    refused = b.refused(HOSTILE_HEADERS[case])
    assert refused.status == 401
    assert "A" * 100 not in refused.reason  # the reason never carries the credential


def test_rotation_by_editing_the_mounted_secret_needs_no_restart(build: Any, tmp_path: Path) -> None:
    volume = SecretVolume(tmp_path)
    old, old_line = generate("etl")
    volume.write(old_line + "\n")
    b = build(auth_modes="apikey", auth_api_keys_file=volume.path)
    assert b.check({"x-api-key": old}).subject == "apikey:etl"
    new, new_line = generate("etl")
    volume.write(f"{old_line}\n{new_line}\n")  # overlap: both work while callers move to the new key
    b.clock.advance(STAT_EVERY)
    assert b.check({"x-api-key": new}).subject == b.check({"x-api-key": old}).subject == "apikey:etl"
    volume.write(new_line + "\n")  # the old key is retired
    assert b.check({"x-api-key": old}).subject == "apikey:etl"  # looked at most once a second ...
    b.clock.advance(STAT_EVERY)
    assert b.refused({"x-api-key": old}).status == 401  # ... and then it is gone
    assert b.check({"x-api-key": new}).subject == "apikey:etl"
    assert b.metric("predictor_auth_api_keys") == 1


def test_a_missing_file_holds_no_keys_until_the_secret_appears(build: Any, tmp_path: Path) -> None:
    b = build(auth_modes="apikey", auth_api_keys_file=str(tmp_path / "keys"))
    key, line = generate("late")
    assert b.refused({"x-api-key": key}).status == 401
    assert b.metric("predictor_auth_api_keys_file_ok") == 1 and b.metric("predictor_auth_api_keys") == 0
    (tmp_path / "keys").write_text(line + "\n")
    b.clock.advance(STAT_EVERY)
    assert b.check({"x-api-key": key}).subject == "apikey:late"


def test_a_broken_file_fails_closed_and_the_log_names_the_line_not_its_content(
    build: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    volume = SecretVolume(tmp_path)
    key, line = generate("etl")
    volume.write(line + "\n")
    b = build(auth_modes="apikey", auth_api_keys_file=volume.path)
    assert b.check({"x-api-key": key}).subject == "apikey:etl"
    volume.write(f"{line}\n{key}\n")  # someone pasted a raw key instead of its entry
    b.clock.advance(STAT_EVERY)
    refused = b.refused({"x-api-key": key})
    assert refused.status == 503 and "line 2" in refused.reason
    assert b.metric("predictor_auth_api_keys_file_ok") == 0
    assert b.metric("predictor_auth_checks_total", method="apikey", outcome="unavailable") == 1
    assert "line 2" in caplog.text and key not in caplog.text and key not in refused.reason
    volume.write(line + "\n")
    b.clock.advance(STAT_EVERY)
    assert b.check({"x-api-key": key}).subject == "apikey:etl"


def test_the_allow_list_applies_to_api_keys(build: Any, tmp_path: Path) -> None:
    allowed, a = generate("reporting")
    other, o = generate("scratch")
    (tmp_path / "keys").write_text(f"{a}\n{o}\n")
    b = build(auth_modes="apikey", auth_api_keys_file=str(tmp_path / "keys"), auth_allow="apikey:reporting")
    assert b.check({"x-api-key": allowed}).subject == "apikey:reporting"
    refused = b.refused({"x-api-key": other})
    assert refused.status == 403 and "allow-list" in refused.reason
    assert b.metric("predictor_auth_checks_total", method="apikey", outcome="forbidden") == 1


def test_no_auth_is_anonymous_and_declares_no_scheme(build: Any) -> None:
    b = build()
    assert b.check({}) == ANONYMOUS == Caller("anonymous", "none")
    assert b.check({"authorization": "Bearer whatever"}) == ANONYMOUS
    assert b.gate.mode == "none" and b.gate.openapi() == ({}, [])
    assert not b.gate.guards_docs and not b.gate.guards_metrics


def test_openapi_schemes_and_challenge_follow_the_modes(build: Any, tmp_path: Path) -> None:
    b = build(
        auth_modes="apikey",
        auth_api_keys_file=str(tmp_path / "keys"),
        auth_guard_docs=True,
        inferenceservice_namespace="team-a",
        inferenceservice_name="risk",
    )
    schemes, security = b.gate.openapi()
    assert schemes["bearer"]["type"] == "http" and schemes["bearer"]["scheme"] == "bearer"
    assert schemes["apiKey"] == {**schemes["apiKey"], "type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert security == [{"bearer": []}, {"apiKey": []}]
    assert b.gate.challenge == 'Bearer realm="team-a/risk"'
    assert b.gate.guards_docs and not b.gate.guards_metrics
    assert (
        b.registry.get_sample_value(
            "predictor_auth_info",
            {"mode": "apikey", "allow_list": "no", "guards_docs": "true", "guards_metrics": "false"},
        )
        == 1
    )


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"auth_modes": "apikey,magic"}, "AUTH_MODES"),
        ({"auth_modes": "none,apikey"}, "AUTH_MODES"),
        ({"auth_modes": "apikey"}, "AUTH_API_KEYS_FILE"),
        ({"auth_modes": "oidc", "auth_oidc_audience": "x"}, "AUTH_OIDC_ISSUER"),
        ({"auth_modes": "oidc", "auth_oidc_issuer": "http://idp.example.org", "auth_oidc_audience": "x"}, "https"),
        ({"auth_modes": "oidc", "auth_oidc_issuer": "https://idp.example.org"}, "AUTH_OIDC_AUDIENCE"),
        ({"auth_modes": "kubernetes"}, "INFERENCESERVICE_NAMESPACE"),
        ({"auth_allow": "group:x"}, "AUTH_ALLOW needs AUTH_MODES"),
        ({"auth_modes": "apikey", "auth_api_keys_file": "k", "auth_allow": "team-a"}, "AUTH_ALLOW"),
    ],
)
def test_settings_that_cannot_work_refuse_to_start(fields: dict[str, str], says: str) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as e:
        settings(**fields)
    assert says in str(e.value)


def test_the_allow_list_grammar() -> None:
    allow = AllowList.parse(
        "group:clinicians, user:alice@example.org, serviceaccount:batch/scorer, serviceaccount:etl/*, apikey:nb"
    )
    assert allow.admits(Caller("bob", "oidc", ("staff", "clinicians")))
    assert allow.admits(Caller("alice@example.org", "oidc"))
    assert allow.admits(Caller("system:serviceaccount:batch:scorer", "oidc"))
    assert allow.admits(Caller("system:serviceaccount:etl:anyone", "oidc"))
    assert allow.admits(Caller("apikey:nb", "apikey"))
    assert not allow.admits(Caller("system:serviceaccount:batch:other", "oidc"))
    assert not allow.admits(Caller("system:serviceaccount:etl2:x", "oidc"))
    assert not allow.admits(Caller("apikey:other", "apikey", ("clinician",)))
    assert AllowList.parse("").admits(Caller("anyone", "oidc"))
    for bad in ("clinicians", "role:x", "serviceaccount:ns", "serviceaccount:NS/x", "apikey:Bad_Id", "user:a b"):
        with pytest.raises(AllowListError):
            AllowList.parse(bad)


def test_fuzzed_headers_are_refused_by_a_check_never_by_accident(build: Any, tmp_path: Path) -> None:
    """Any text in either header (Starlette hands headers over as latin-1 text) ends in a named 401."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from custom_predictor.auth import Refused

    _, line = generate("demo")
    (tmp_path / "keys").write_text(line + "\n")
    b = build(auth_modes="apikey", auth_api_keys_file=str(tmp_path / "keys"))
    latin1 = st.text(st.characters(max_codepoint=255), max_size=200)
    values = latin1 | latin1.map(lambda t: "Bearer " + t) | latin1.map(lambda t: "sbk_demo_" + t)

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(name=st.sampled_from(["authorization", "x-api-key", "Authorization", "X-API-KEY"]), value=values)
    def check(name: str, value: str) -> None:
        try:
            caller = b.check({name: value})
        except Refused as r:
            assert r.status == 401 and not r.reason.startswith("unexpected"), r.reason
        else:
            raise AssertionError(f"accepted {value!r} as {caller}")

    check()
