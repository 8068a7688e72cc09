"""The default install (`kubectl apply -k deploy`), the predictors' ServiceAccount and ClusterRole included, as the
real API server of the test control plane accepts it: a server-side dry run (admission, RBAC escalation checks,
schema). Only its namespace is created for real: a dry run cannot place objects in a namespace that does not
exist. That the ClusterRole is enough for the kubernetes auth mode is tested for real in tests/auth."""

from __future__ import annotations

from typing import Any

import yaml

from tests.controlplane.plane import ControlPlane
from tests.deploy.conftest import kustomize


def test_the_default_install_passes_a_server_side_dry_run(control_plane: ControlPlane) -> None:
    objs: list[dict[str, Any]] = kustomize("deploy")
    (namespace,) = [o for o in objs if o["kind"] == "Namespace"]
    control_plane.apply(namespace)
    proc = control_plane.kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--field-manager=test-dry-run",
        "-f",
        "-",
        input=yaml.safe_dump_all(objs),
    )
    applied = proc.stdout
    for kind, name in (
        ("serviceaccount", "service-builder-predictor"),
        ("clusterrole.rbac.authorization.k8s.io", "service-builder-predictor-reviews"),
        ("clusterrolebinding.rbac.authorization.k8s.io", "service-builder-predictor-reviews"),
        ("role.rbac.authorization.k8s.io", "service-builder"),
        ("deployment.apps", "service-builder"),
    ):
        assert f"{kind}/{name} serverside-applied (server dry run)" in applied, applied
