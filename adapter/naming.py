"""Names derived from untrusted MLflow model names: InferenceService names and URL paths.

InferenceService names are DNS-1035 labels of at most 45 characters (Knative appends
`-predictor-00001` and must stay within 63). They are deterministic and collision-safe: a name that
is not already a valid label gets a hash of the original appended, so `Risk Model` and `risk-model`
never map to the same object.
"""

from __future__ import annotations

import hashlib
import re

MAX_ISVC_NAME = 45
_HASH_LEN = 8
_NON_ALNUM = re.compile(r"[^a-z0-9]+")
_DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")  # KServe's IsvcNameFmt


def invalid_isvc_name(name: str) -> str | None:
    """Why `name` cannot be an InferenceService name as given (KServe's DNS-1035 rule and our length), or None."""
    if not _DNS_1035.fullmatch(name):
        return (
            f"{name[:80]!r} is not a DNS-1035 label: lowercase letters, digits and '-', starting with a letter"
            " and ending with a letter or digit"
        )
    if len(name) > MAX_ISVC_NAME:
        return f"{name[:80]!r} is longer than {MAX_ISVC_NAME} characters (Knative appends -predictor-00001)"
    return None


def service_path(model_name: str) -> str:
    """The predictor's URL path name: `Breast Cancer_Risk` -> `breast-cancer-risk` (same rule as the predictor)."""
    return _NON_ALNUM.sub("-", model_name.lower()).strip("-") or "model"


def isvc_name(model_name: str) -> str:
    """A DNS-1035 name of at most 45 characters, unique per model name."""
    base = _NON_ALNUM.sub("-", model_name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = f"m-{base}".rstrip("-")
    if base == model_name and len(base) <= MAX_ISVC_NAME:
        return base
    digest = hashlib.sha256(model_name.encode("utf-8")).hexdigest()[:_HASH_LEN]
    head = base[: MAX_ISVC_NAME - _HASH_LEN - 1].rstrip("-")
    return f"{head}-{digest}"
