"""Per-model serving overrides from MLflow tags (`serving.*`), validated, with where each value came from.

Pure. Model owners steer scaling, resources, image, extra env, canary traffic, who may call the model
(`serving.auth`, `serving.auth.allow`) and the inference log (`serving.log`, `serving.log.sample`) from MLflow: a
tag on the registered model applies to every version, a tag on the served version wins over it. Every value is
checked (type, range, Kubernetes quantity syntax, the CRD's enums, allow-lists) and held to the cluster-wide caps
in the settings; the first bad tag raises `OverrideError` naming the tag and the rule, and then nothing is
applied for that model. Defaults are the template's values (auth's: PREDICTOR_AUTH; the inference log's: the
platform's INFERENCE_LOG_MODE and INFERENCE_LOG_SAMPLE).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from adapter import auth
from adapter.settings import AdapterSettings

PREFIX = "serving."
SCALE_METRICS = ("cpu", "memory", "concurrency", "rps")  # the CRD's enum
_QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?)(?P<unit>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")
_UNITS: dict[str, Decimal | int] = {
    "": 1,
    "m": Decimal("0.001"),
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENV_VALUE = 1024


class OverrideError(ValueError):
    """A `serving.*` tag is invalid; the message names the tag, where it is, and the rule."""


def quantity(text: str) -> Decimal:
    """A Kubernetes quantity (`250m`, `2`, `512Mi`, `1.5Gi`) as a number; ValueError if malformed."""
    m = _QUANTITY.match(text.strip())
    if not m:
        raise ValueError("not a Kubernetes quantity (e.g. 500m, 2, 512Mi, 1Gi)")
    try:
        return Decimal(m["num"]) * Decimal(_UNITS[m["unit"] or ""])
    except InvalidOperation:
        raise ValueError("not a Kubernetes quantity") from None


@dataclass(frozen=True)
class Field:
    # Where in spec.predictor: container fields start with "container"; ("container", "env", NAME) is an env value;
    # () with `env`.
    path: tuple[str, ...]
    parse: Callable[[str, AdapterSettings], Any]
    rule: str
    help: str = ""  # what it does and its range, for people (`mlflow deployments help -t kserve`)
    env: str = ""  # set by render (`auth.apply`) as this predictor env var, not by `apply` at `path`


def _int(lo: int, hi: Callable[[AdapterSettings], int] | None = None) -> Callable[[str, AdapterSettings], int]:
    def parse(text: str, s: AdapterSettings) -> int:
        if not re.fullmatch(r"[0-9]+", text.strip()):
            raise ValueError("must be a whole number")
        value = int(text)
        top = hi(s) if hi else None
        if value < lo or (top is not None and value > top):
            raise ValueError(f"must be between {lo} and {top}" if top is not None else f"must be at least {lo}")
        return value

    return parse


def _metric(text: str, _: AdapterSettings) -> str:
    if text.strip() not in SCALE_METRICS:
        raise ValueError(f"must be one of {', '.join(SCALE_METRICS)}")
    return text.strip()


def _qty(cap: Callable[[AdapterSettings], str]) -> Callable[[str, AdapterSettings], str]:
    def parse(text: str, s: AdapterSettings) -> str:
        value = quantity(text)
        if value <= 0:
            raise ValueError("must be more than 0")
        if value > quantity(cap(s)):
            raise ValueError(f"exceeds the cluster cap of {cap(s)}")
        return text.strip()

    return parse


def _auth_modes(text: str, s: AdapterSettings) -> str:
    return auth.parse_modes(text, auth.offered(s), s.predictor_auth_allow_anonymous)


def _auth_allow(text: str, _: AdapterSettings) -> str:
    return auth.parse_allow(text)


def _image(text: str, s: AdapterSettings) -> str:
    if text.strip() not in s.allowed_images:
        raise ValueError("is not in PREDICTOR_IMAGES or SERVING_IMAGE_ALLOWLIST")
    return text.strip()


def _log_mode(text: str, s: AdapterSettings) -> str:
    value = text.strip()
    if value not in ("off", "metadata", "full"):
        raise ValueError("must be one of off, metadata, full")
    if value not in s.inference_log_allowed_modes:
        raise ValueError(f"is not allowed here (INFERENCE_LOG_MODES_ALLOWED: {s.inference_log_modes_allowed})")
    return value


def _log_sample(text: str, s: AdapterSettings) -> str:
    try:
        value = float(text.strip())
    except ValueError:
        raise ValueError("must be a number between 0 and 1") from None
    if not 0.0 <= value <= 1.0:  # also refuses nan
        raise ValueError("must be between 0 and 1")
    if value > s.inference_log_sample_cap:
        raise ValueError(f"exceeds the cluster cap of {s.inference_log_sample_cap}")
    return str(value)


def _body_bytes(text: str, s: AdapterSettings) -> str:
    """A body size (a quantity: 32Mi, 1000000) as whole bytes, 1Ki .. SERVING_MAX_BODY_CAP."""
    value = quantity(text)
    if value != value.to_integral_value():
        raise ValueError("must be a whole number of bytes (e.g. 32Mi)")
    if value < 1024:
        raise ValueError("must be at least 1Ki")
    if value > quantity(s.serving_max_body_cap):
        raise ValueError(f"exceeds the cluster cap of {s.serving_max_body_cap}")
    return str(int(value))


_QTY_CPU, _QTY_MEM = "a quantity (500m, 2)", "a quantity (512Mi, 2Gi)"
FIELDS: dict[str, Field] = {
    "min_replicas": Field(
        ("minReplicas",),
        _int(0, lambda s: s.serving_max_replicas_cap),
        "0..cap",
        "fewest pods; 0 allows scale to zero. 0 .. SERVING_MAX_REPLICAS_CAP",
    ),
    "max_replicas": Field(
        ("maxReplicas",),
        _int(1, lambda s: s.serving_max_replicas_cap),
        "1..cap",
        "most pods. 1 .. SERVING_MAX_REPLICAS_CAP",
    ),
    "scale_metric": Field(("scaleMetric",), _metric, "enum", f"Knative autoscaling metric: {', '.join(SCALE_METRICS)}"),
    "scale_target": Field(("scaleTarget",), _int(1, lambda s: 100000), "1..100000", "autoscaling target. 1 .. 100000"),
    "container_concurrency": Field(
        ("containerConcurrency",), _int(0, lambda s: 1000), "0..1000", "hard limit of requests per pod. 0 .. 1000"
    ),
    "timeout_seconds": Field(
        ("timeout",),
        _int(1, lambda s: s.serving_timeout_cap),
        "1..cap",
        "request timeout, seconds. 1 .. SERVING_TIMEOUT_CAP",
    ),
    "canary_percent": Field(
        ("canaryTrafficPercent",),
        _int(0, lambda s: 100),
        "0..100",
        "share of traffic for the new version, the previous one keeps the rest; 100: all. 0 .. 100",
    ),
    "cpu_request": Field(
        ("container", "resources", "requests", "cpu"),
        _qty(lambda s: s.serving_cpu_cap),
        "qty",
        f"{_QTY_CPU}, at most SERVING_CPU_CAP, <= cpu_limit",
    ),
    "cpu_limit": Field(
        ("container", "resources", "limits", "cpu"),
        _qty(lambda s: s.serving_cpu_cap),
        "qty",
        f"{_QTY_CPU}, at most SERVING_CPU_CAP",
    ),
    "memory_request": Field(
        ("container", "resources", "requests", "memory"),
        _qty(lambda s: s.serving_memory_cap),
        "qty",
        f"{_QTY_MEM}, at most SERVING_MEMORY_CAP, <= memory_limit",
    ),
    "memory_limit": Field(
        ("container", "resources", "limits", "memory"),
        _qty(lambda s: s.serving_memory_cap),
        "qty",
        f"{_QTY_MEM}, at most SERVING_MEMORY_CAP",
    ),
    "image": Field(
        ("container", "image"),
        _image,
        "allow-list",
        "another predictor image (skips the choice): one of PREDICTOR_IMAGES, PREDICTOR_IMAGE, SERVING_IMAGE_ALLOWLIST",
    ),
    "auth": Field(
        (),
        _auth_modes,
        "modes",
        "who may call it: a comma list of oidc, kubernetes, apikey (those PREDICTOR_AUTH_MODES_ALLOWED offers), or"
        " none where PREDICTOR_AUTH_ALLOW_ANONYMOUS; default PREDICTOR_AUTH",
        env="AUTH_MODES",
    ),
    "auth.allow": Field(
        (),
        _auth_allow,
        "allow-list",
        "who of them (oidc, apikey): comma list of group:<name>, user:<subject>, serviceaccount:<ns>/<name or *>,"
        " apikey:<id>; default: anyone authenticated",
        env="AUTH_ALLOW",
    ),
    "max_body": Field(
        ("container", "env", "MAX_BODY_BYTES"),
        _body_bytes,
        "1Ki..cap",
        "largest request body the predictor reads (a quantity: 32Mi); default 16Mi. 1Ki .. SERVING_MAX_BODY_CAP",
    ),
    # The inference log (docs/inference-log.md): container env the predictor reads; defaults are the platform's.
    "log": Field(
        ("container", "env", "INFERENCE_LOG_MODE"),
        _log_mode,
        "enum",
        "inference log: off, metadata (every call, no bodies) or full (bodies too); within INFERENCE_LOG_MODES_ALLOWED",
    ),
    "log.sample": Field(
        ("container", "env", "INFERENCE_LOG_SAMPLE"),
        _log_sample,
        "0..cap",
        "under log=full, the share of calls whose bodies are kept. 0 .. INFERENCE_LOG_SAMPLE_CAP",
    ),
}
_DEFAULT_SOURCE = {
    "image": "PREDICTOR_IMAGE",
    "log": "INFERENCE_LOG_MODE",
    "log.sample": "INFERENCE_LOG_SAMPLE",
    "auth": "PREDICTOR_AUTH",
    "auth.allow": "PREDICTOR_AUTH",
}
ENV_HELP = "extra env for the predictor; <NAME> in SERVING_ENV_ALLOWLIST, at most 1024 characters"


@dataclass
class Overrides:
    """Validated values by key (`min_replicas`, `env.LOG_LEVEL`, ...), where each came from, and how a key is
    spelled in messages (`serving.` for tags, nothing for the plugin's `-C` keys)."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    spelling: str = PREFIX

    @property
    def canary_percent(self) -> int | None:
        value = self.values.get("canary_percent")
        return None if value is None or value == 100 else int(value)


def known_keys() -> list[str]:
    """Every setting's key (the `serving.*` tag without its prefix), `env.<NAME>` standing for the env keys."""
    return sorted([*FIELDS, "env.<NAME>"])


def resolve(settings: AdapterSettings, model_tags: Mapping[str, str], version_tags: Mapping[str, str]) -> Overrides:
    """Model tags first, then version tags over them; raises OverrideError on the first bad tag."""
    layers = [
        (source, {tag[len(PREFIX) :]: str(tags[tag]) for tag in tags if tag.startswith(PREFIX)})
        for source, tags in (("model tag", model_tags), ("version tag", version_tags))
    ]
    return resolve_layers(settings, layers, spelling=PREFIX)


def resolve_layers(
    settings: AdapterSettings, layers: Sequence[tuple[str, Mapping[str, str]]], spelling: str
) -> Overrides:
    """Settings by key (`min_replicas`, `env.LOG_LEVEL`), later layers over earlier ones, each named by its
    source; messages spell a key `spelling + key`. Raises OverrideError on the first bad value."""
    out = Overrides(spelling=spelling)
    env_allowed = {n.strip() for n in settings.serving_env_allowlist.split(",") if n.strip()}
    for source, values in layers:
        for key in sorted(values):
            raw = values[key]
            where = f"{source} {spelling}{key}={raw[:60]!r}"
            if key.startswith("env."):
                name = key[4:]
                if not _ENV_NAME.match(name) or name not in env_allowed:
                    raise OverrideError(f"{where}: {name!r} is not in SERVING_ENV_ALLOWLIST")
                if len(raw) > MAX_ENV_VALUE or "\x00" in raw:
                    raise OverrideError(f"{where}: env values are at most {MAX_ENV_VALUE} characters")
                value: Any = raw
            else:
                spec = FIELDS.get(key)
                if spec is None:
                    raise OverrideError(f"{where}: unknown setting; known: {', '.join(known_keys())}")
                try:
                    value = spec.parse(raw, settings)
                except ValueError as e:
                    raise OverrideError(f"{where}: {e}") from None
            out.values[key] = value
            out.sources[key] = source
    _check_pairs(out)
    return out


def _check_pairs(o: Overrides) -> None:
    v = o.values
    if "min_replicas" in v and "max_replicas" in v and v["min_replicas"] > v["max_replicas"]:
        raise OverrideError(
            f"{o.spelling}min_replicas={v['min_replicas']} ({o.sources['min_replicas']}) is above "
            f"{o.spelling}max_replicas={v['max_replicas']} ({o.sources['max_replicas']})"
        )
    for res in ("cpu", "memory"):
        req, lim = v.get(f"{res}_request"), v.get(f"{res}_limit")
        if req and lim and quantity(req) > quantity(lim):
            raise OverrideError(f"{o.spelling}{res}_request={req} is above {o.spelling}{res}_limit={lim}")


def apply(doc: dict[str, Any], overrides: Overrides, container_name: str) -> None:
    """Set the overridden fields on a rendered InferenceService (values only, never YAML text)."""
    predictor = doc["spec"]["predictor"]
    container = next(c for c in predictor["containers"] if c.get("name") == container_name)
    for key, value in overrides.values.items():
        if key.startswith("env."):
            env = container.setdefault("env", [])
            name = key[4:]
            env[:] = [e for e in env if e.get("name") != name] + [{"name": name, "value": value}]
            continue
        if key == "canary_percent" and value == 100:
            continue  # 100 means promoted: no canary field at all
        if FIELDS[key].env:
            continue  # render sets it (auth.apply), within the platform's rules
        path = FIELDS[key].path
        if path[:2] == ("container", "env"):
            env = container.setdefault("env", [])
            env[:] = [e for e in env if e.get("name") != path[2]] + [{"name": path[2], "value": str(value)}]
            continue
        node: dict[str, Any] = container if path[0] == "container" else predictor
        keys = path[1:] if path[0] == "container" else path
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    _check_manifest(predictor, container, overrides)


def _check_manifest(predictor: dict[str, Any], container: dict[str, Any], o: Overrides) -> None:
    """Pairs across tags and template: min <= max replicas, request <= limit (only when a tag is involved)."""

    def src(key: str) -> str:
        return f"{o.spelling}{key} ({o.sources[key]})" if key in o.sources else f"{key} (template)"

    lo, hi = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if {"min_replicas", "max_replicas"} & o.sources.keys() and lo is not None and hi and lo > hi:
        raise OverrideError(f"{src('min_replicas')}={lo} is above {src('max_replicas')}={hi}")
    res = container.get("resources") or {}
    for kind in ("cpu", "memory"):
        req, lim = (res.get("requests") or {}).get(kind), (res.get("limits") or {}).get(kind)
        keys = {f"{kind}_request", f"{kind}_limit"}
        if keys & o.sources.keys() and req is not None and lim is not None and quantity(str(req)) > quantity(str(lim)):
            raise OverrideError(f"{src(kind + '_request')}={req} is above {src(kind + '_limit')}={lim}")


def effective(doc: dict[str, Any], overrides: Overrides, container_name: str) -> list[tuple[str, str, str]]:
    """(setting, value, source) for every known setting of a rendered manifest: for `render`/`status`."""
    predictor = doc["spec"]["predictor"]
    container = next(c for c in predictor["containers"] if c.get("name") == container_name)
    rows = []
    env = {e.get("name"): e.get("value") for e in container.get("env") or []}
    for key, spec in FIELDS.items():
        name = spec.env or (spec.path[2] if spec.path[:2] == ("container", "env") else "")
        node: Any = env.get(name) if name else container if spec.path[0] == "container" else predictor
        for k in () if name else spec.path[1:] if spec.path[0] == "container" else spec.path:
            node = node.get(k) if isinstance(node, dict) else None
        if node is None and key != "canary_percent":
            continue
        value = "100 (no canary)" if node is None else str(node)
        default = _DEFAULT_SOURCE.get(key, "PREDICTOR_AUTH" if spec.env else "template")
        rows.append((key, value, overrides.sources.get(key, default)))
    for key in sorted(k for k in overrides.values if k.startswith("env.")):
        rows.append((key, str(overrides.values[key]), overrides.sources[key]))
    return rows
