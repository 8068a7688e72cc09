"""Label and field selectors as kube-apiserver parses them, and ObjectMeta name/label rules.

Label selectors: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`, `k<1`, joined
by commas (all must hold). Field selectors: `path=v`, `path==v`, `path!=v` on the fields a kind allows.
A malformed selector raises ApiError 400 BadRequest, as the real server answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from tests.kubeapi.errors import ApiError

Predicate = Callable[[dict[str, Any]], bool]

DNS1123_SUBDOMAIN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
_DNS1123_SUBDOMAIN_RE = re.compile(DNS1123_SUBDOMAIN)
LABEL_VALUE = r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?"
_LABEL_VALUE_RE = re.compile(LABEL_VALUE)
QUALIFIED_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QUALIFIED_NAME_RE = re.compile(QUALIFIED_NAME)


def dns1123_subdomain_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 253:
        errors.append("must be no more than 253 characters")
    if not _DNS1123_SUBDOMAIN_RE.fullmatch(value):
        errors.append(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
            f"validation is '{DNS1123_SUBDOMAIN}')"
        )
    return errors


def label_value_errors(value: str) -> list[str]:
    errors = []
    if len(value) > 63:
        errors.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.fullmatch(value):
        errors.append(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
            f"'12345', regex used for validation is '{LABEL_VALUE}')"
        )
    return errors


def qualified_name_errors(value: str) -> list[str]:
    """Label/annotation keys and finalizers: `[prefix/]name`, prefix a DNS subdomain, name <= 63."""
    prefix, _, name = value.rpartition("/")
    errors = []
    if "/" in value and not prefix:
        errors.append("prefix part must be non-empty")
    elif prefix:
        errors.extend("prefix part " + e for e in dns1123_subdomain_errors(prefix))
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if name and not _QUALIFIED_NAME_RE.fullmatch(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
            "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
            f"validation is '{QUALIFIED_NAME}')"
        )
    return errors


def _split_requirements(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += ch
    if depth != 0:
        raise ApiError.bad_request(f"unable to parse requirement: unbalanced parentheses in {text!r}")
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")
_OP_RE = re.compile(r"^([^=!<>\s]+)\s*(==|=|!=|<|>)\s*(.*)$")


def _check_key(key: str, text: str) -> None:
    errors = qualified_name_errors(key)
    if errors:
        raise ApiError.bad_request(f"unable to parse requirement: key: Invalid value: {key!r}: {errors[0]}")


def _check_value(value: str) -> None:
    errors = label_value_errors(value)
    if errors:
        raise ApiError.bad_request(f"unable to parse requirement: values[0]: Invalid value: {value!r}: {errors[0]}")


def _requirement(text: str) -> Callable[[dict[str, str]], bool]:
    if m := _SET_RE.match(text):
        key, op, raw = m.group(1), m.group(2), m.group(3)
        _check_key(key, text)
        values = {v.strip() for v in raw.split(",")} - {""}
        for v in values:
            _check_value(v)
        if op == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if m := _OP_RE.match(text):
        key, op, value = m.group(1), m.group(2), m.group(3).strip()
        _check_key(key, text)
        if op in ("<", ">"):
            try:
                bound = int(value)
            except ValueError:
                raise ApiError.bad_request(
                    f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {value}"
                ) from None

            def compare(labels: dict[str, str]) -> bool:
                try:
                    number = int(labels[key])
                except (KeyError, ValueError):
                    return False
                return number > bound if op == ">" else number < bound

            return compare
        _check_value(value)
        if op == "!=":
            return lambda labels: labels.get(key) != value
        return lambda labels: labels.get(key) == value
    if text.startswith("!"):
        key = text[1:].strip()
        _check_key(key, text)
        return lambda labels: key not in labels
    _check_key(text, text)
    return lambda labels: text in labels


def label_selector(text: str | None) -> Predicate:
    """A predicate on whole objects for the labelSelector query parameter."""
    if not text:
        return lambda obj: True
    requirements = [_requirement(part) for part in _split_requirements(text)]

    def matches(obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(req(labels) for req in requirements)

    return matches


def _dig(obj: Any, path: str) -> str:
    for part in path.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    if obj is None:
        return ""
    return str(obj).lower() if isinstance(obj, bool) else str(obj)


def field_selector(text: str | None, allowed: Iterable[str]) -> Predicate:
    """A predicate for the fieldSelector query parameter; only `allowed` field paths are accepted."""
    if not text:
        return lambda obj: True
    allowed = list(allowed)
    checks: list[Predicate] = []
    for part in _split_requirements(text):
        m = re.match(r"^([^=!]+)(==|=|!=)(.*)$", part)
        if not m:
            raise ApiError.bad_request(f"invalid selector: '{text}'; can't understand '{part}'")
        path, op, value = m.group(1).strip(), m.group(2), m.group(3).strip()
        if path not in allowed:
            known = ", ".join(f'"{a}"' for a in allowed)
            raise ApiError.bad_request(f'"{path}" is not a known field selector: only {known}')
        checks.append(_field_check(path, value, negate=op == "!="))
    return lambda obj: all(check(obj) for check in checks)


def _field_check(path: str, value: str, negate: bool) -> Predicate:
    return lambda obj: (_dig(obj, path) == value) != negate
