"""Who may call a model: the platform's auth settings, the owners' `serving.auth` / `serving.auth.allow` tags (and
the plugin's `-C auth`), and what render puts on the InferenceService (validated strictly against the CRD):
modes as predictor env, the API-key Secret as an optional read-only volume, the predictor's ServiceAccount, never
a secret value."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from adapter import plugin
from adapter.auth import KEYS_MOUNT, parse_allow
from adapter.overrides import OverrideError, effective, resolve
from adapter.reconcile import Reconciler
from adapter.render import CONTAINER, render, to_yaml
from adapter.settings import AdapterSettings
from adapter.types import VersionInfo
from custom_predictor.auth.allow import AllowList, AllowListError
from custom_predictor.auth.apikeys import generate
from tests.adapter import crd
from tests.adapter.fakes import FakeCluster, FakeRegistry

ISSUER = "https://login.example.org/realms/clinic"


def settings(**kw: object) -> AdapterSettings:
    kw.setdefault("k8s_name_space", "models")
    return AdapterSettings(**kw)  # type: ignore[arg-type]


def rendered(s: AdapterSettings, **tags: str) -> dict:
    doc = render(s, VersionInfo("Risk", "3", tags=tags), overrides=resolve(s, {}, tags))
    assert crd.errors(doc) == []
    return doc


def env_of(doc: dict) -> dict[str, str]:
    (container,) = doc["spec"]["predictor"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_a_cluster_is_secure_by_default_kubernetes_rbac_under_the_predictors_account() -> None:
    doc = rendered(settings())
    env = env_of(doc)
    assert env["AUTH_MODES"] == "kubernetes" and "AUTH_ALLOW" not in env
    assert env["INFERENCESERVICE_NAME"] == doc["metadata"]["name"]
    assert doc["spec"]["predictor"]["serviceAccountName"] == "service-builder-predictor"
    assert [v["name"] for v in doc["spec"]["predictor"]["volumes"]] == ["tmp"]  # the template's emptyDir only


def test_api_keys_mount_the_models_secret_by_name_optional_and_read_only() -> None:
    doc = rendered(settings(), **{"serving.auth": "apikey", "serving.auth.allow": "apikey:notebook, group:x"})
    predictor = doc["spec"]["predictor"]
    (container,) = predictor["containers"]
    name = doc["metadata"]["name"]
    assert predictor["volumes"][1:] == [
        {"name": "api-keys", "secret": {"secretName": f"{name}-api-keys", "optional": True}}
    ]
    assert container["volumeMounts"][1:] == [{"name": "api-keys", "mountPath": KEYS_MOUNT, "readOnly": True}]
    env = env_of(doc)
    assert env["AUTH_MODES"] == "apikey" and env["AUTH_API_KEYS_FILE"] == f"{KEYS_MOUNT}/keys"
    assert env["AUTH_ALLOW"] == "apikey:notebook,group:x"
    assert "serviceAccountName" not in predictor  # API keys need no Kubernetes API: the namespace's default account


def test_oidc_renders_the_platforms_issuer_settings() -> None:
    s = settings(
        predictor_auth="oidc,apikey",
        predictor_auth_oidc_issuer=ISSUER,
        predictor_auth_oidc_audience="service-builder",
        predictor_auth_oidc_subject_claim="email",
        predictor_auth_oidc_ca_file="/etc/idp/ca.crt",
        predictor_auth_guard_docs=True,
    )
    env = env_of(rendered(s))
    assert env["AUTH_MODES"] == "apikey,oidc"
    assert (env["AUTH_OIDC_ISSUER"], env["AUTH_OIDC_AUDIENCE"]) == (ISSUER, "service-builder")
    assert (env["AUTH_OIDC_SUBJECT_CLAIM"], env["AUTH_OIDC_CA_FILE"]) == ("email", "/etc/idp/ca.crt")
    assert env["AUTH_GUARD_DOCS"] == "true" and env["AUTH_GUARD_METRICS"] == "false"


@pytest.mark.parametrize(
    ("kw", "tags", "says"),
    [
        ({}, {"serving.auth": "none"}, "serving.auth='none': none is not allowed: PREDICTOR_AUTH_ALLOW_ANONYMOUS"),
        ({}, {"serving.auth": "oidc"}, "serving.auth='oidc': oidc is not offered here"),
        ({"predictor_auth_modes_allowed": "kubernetes"}, {"serving.auth": "apikey"}, "apikey is not offered"),
        ({}, {"serving.auth": "password"}, "must be a comma list of apikey, kubernetes, oidc"),
        ({}, {"serving.auth.allow": "clinicians"}, "serving.auth.allow='clinicians': 'clinicians': each entry is"),
        ({}, {"serving.auth.allow": "serviceaccount:batch"}, "serviceaccount:<namespace>/<name>"),
    ],
)
def test_an_invalid_auth_tag_names_the_tag_and_the_rule(kw: dict, tags: dict[str, str], says: str) -> None:
    with pytest.raises(OverrideError) as e:
        rendered(settings(**kw), **tags)
    assert says in str(e.value)


def test_anonymous_models_only_where_the_platform_allows_them() -> None:
    s = settings(predictor_auth_allow_anonymous=True)
    doc = rendered(s, **{"serving.auth": "none"})
    assert env_of(doc)["AUTH_MODES"] == "none" and "serviceAccountName" not in doc["spec"]["predictor"]
    with pytest.raises(ValidationError, match="PREDICTOR_AUTH: none is not allowed"):
        settings(predictor_auth="none")
    with pytest.raises(ValidationError, match="PREDICTOR_AUTH: oidc is not offered"):
        settings(predictor_auth="oidc")
    with pytest.raises(ValidationError, match="PREDICTOR_AUTH_OIDC_AUDIENCE"):
        settings(predictor_auth_oidc_issuer=ISSUER)


def test_an_invalid_auth_tag_fails_that_model_only() -> None:
    reg, cluster = FakeRegistry(), FakeCluster()
    reg.add("m", "1", stage="production")
    reg.add("ok", "1", stage="production")
    reg.model_tags["m"]["serving.auth"] = "none"
    out = Reconciler(settings(), reg, cluster).run_pass().by_model()
    assert out["m"].status == "failed" and "model tag serving.auth='none'" in out["m"].message
    assert "m" not in cluster.objects and out["ok"].action == "created"


def test_render_and_status_show_where_the_auth_came_from() -> None:
    s = settings()
    o = resolve(s, {"serving.auth": "apikey"}, {})
    rows = {k: (v, src) for k, v, src in effective(render(s, VersionInfo("m", "1"), overrides=o), o, CONTAINER)}
    assert rows["auth"] == ("apikey", "model tag")
    rows = {k: (v, src) for k, v, src in effective(render(s, VersionInfo("m", "1")), resolve(s, {}, {}), CONTAINER)}
    assert rows["auth"] == ("kubernetes", "PREDICTOR_AUTH") and "auth.allow" not in rows


def test_the_plugin_takes_the_same_keys_in_dash_c() -> None:
    options, keep, _ = plugin._options(settings(), {"auth": "apikey", "auth.allow": "apikey:nb"}, {}, {})
    assert options.values == {"auth": "apikey", "auth.allow": "apikey:nb"} and keep["auth"] == "apikey"
    with pytest.raises(plugin.PluginError, match="auth='none': none is not allowed"):
        plugin._options(settings(), {"auth": "none"}, {}, {})


def test_local_predictors_read_a_keys_file_of_the_platform(tmp_path: Path) -> None:
    s = settings(deploy_target="local", service_builder_state_dir=tmp_path)
    doc = rendered(s)
    env = env_of(doc)
    assert env["AUTH_MODES"] == "apikey" and env["AUTH_API_KEYS_FILE"] == str(tmp_path.resolve() / "api-keys")
    assert [v["name"] for v in doc["spec"]["predictor"]["volumes"]] == ["tmp"]


def test_no_key_or_token_is_ever_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    key, line = generate("planted")
    monkeypatch.setenv("PREDICTOR_API_KEY", key)
    monkeypatch.setenv("PREDICTOR_TOKEN", "planted-token-eyJhbGciOi")
    monkeypatch.setenv("K8S_API_KEY", "planted-k8s-token")
    s = settings(predictor_auth="apikey,kubernetes", predictor_secret_name="mlflow-s3")
    assert s.predictor_api_key.get_secret_value() == key  # the plugin has them: rendering must not
    text = to_yaml(rendered(s, **{"serving.auth.allow": "apikey:planted"}))
    for secret in (key, line.split()[1], "planted-token-eyJhbGciOi", "planted-k8s-token"):
        assert secret not in text
    assert "secretName: risk-" in text and "-api-keys" in text  # the keys' Secret, by name only


@pytest.mark.parametrize(
    "text",
    [
        "group:clinicians, user:alice@example.org",
        "serviceaccount:batch/scorer,serviceaccount:etl/*,apikey:nb",
        "user:apikey:nb",
        "clinicians",
        "role:x",
        "serviceaccount:ns",
        "serviceaccount:NS/x",
        "apikey:Bad_Id",
        "group:",
        "user:a b",
    ],
)
def test_adapter_and_predictor_agree_on_the_allow_list_grammar(text: str) -> None:
    try:
        AllowList.parse(text)
        predictor_ok = True
    except AllowListError:
        predictor_ok = False
    try:
        parse_allow(text)
        adapter_ok = True
    except ValueError:
        adapter_ok = False
    assert adapter_ok == predictor_ok


def test_predict_sends_a_token_or_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PREDICTOR_TOKEN_FILE", "PREDICTOR_TOKEN", "PREDICTOR_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert plugin.credentials(settings()) == {}
    monkeypatch.setenv("PREDICTOR_API_KEY", "sbk_nb_key")
    assert plugin.credentials(settings()) == {"Authorization": "Bearer sbk_nb_key"}
    monkeypatch.setenv("PREDICTOR_TOKEN", "a-token")
    assert plugin.credentials(settings()) == {"Authorization": "Bearer a-token"}
    token = tmp_path / "token"
    token.write_text("projected-token\n")
    monkeypatch.setenv("PREDICTOR_TOKEN_FILE", str(token))
    s = settings()
    assert plugin.credentials(s) == {"Authorization": "Bearer projected-token"}
    token.write_text("rotated-token\n")  # kubelet rotates projected tokens: read at each call
    assert plugin.credentials(s) == {"Authorization": "Bearer rotated-token"}
    token.unlink()
    with pytest.raises(plugin.PluginError, match=r"PREDICTOR_TOKEN_FILE .*: cannot read it"):
        plugin.credentials(s)
