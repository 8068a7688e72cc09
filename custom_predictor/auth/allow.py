"""The allow-list (AUTH_ALLOW, the `serving.auth.allow` tag): who may call once authenticated.

Pure. Applied by `gate.Gate` to OIDC and API-key callers after authentication; Kubernetes callers are authorized
by RBAC (a SubjectAccessReview) alone. Entries, comma separated:

- `group:<name>`: a member of the group (the OIDC groups claim);
- `user:<subject>`: exactly that subject (`user:alice@example.org`, `user:apikey:notebook`);
- `serviceaccount:<namespace>/<name>`: that Kubernetes ServiceAccount (subject
  `system:serviceaccount:<namespace>:<name>`, as the API server issues it); `<name>` `*` for every one in the
  namespace;
- `apikey:<id>`: the API key with that id.

An empty list allows every authenticated caller. The adapter checks the same grammar (`adapter/auth.py`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from custom_predictor.auth.caller import Caller

KINDS = ("group", "user", "serviceaccount", "apikey")
MAX_ENTRIES = 256
_VALUE = re.compile(r"[^\s,\x00-\x1f\x7f]{1,253}")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?")
_KEY_ID = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


class AllowListError(ValueError):
    """An entry does not follow the grammar; the message names it and the rule."""


@dataclass(frozen=True)
class AllowList:
    groups: frozenset[str] = frozenset()
    subjects: frozenset[str] = frozenset()
    subject_prefixes: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.groups or self.subjects or self.subject_prefixes)

    def admits(self, caller: Caller) -> bool:
        if self.empty or caller.subject in self.subjects:
            return True
        if any(caller.subject.startswith(p) for p in self.subject_prefixes):
            return True
        return any(g in self.groups for g in caller.groups)

    @classmethod
    def parse(cls, text: str) -> AllowList:
        groups: set[str] = set()
        subjects: set[str] = set()
        prefixes: list[str] = []
        entries = [e.strip() for e in text.split(",") if e.strip()]
        if len(entries) > MAX_ENTRIES:
            raise AllowListError(f"at most {MAX_ENTRIES} entries")
        for entry in entries:
            kind, sep, value = entry.partition(":")
            shown = repr(entry[:80])
            if not sep or kind not in KINDS:
                raise AllowListError(f"{shown}: each entry is {', '.join(k + ':...' for k in KINDS)}")
            if not _VALUE.fullmatch(value):
                raise AllowListError(f"{shown}: the value is 1 to 253 printable characters without spaces or commas")
            if kind == "group":
                groups.add(value)
            elif kind == "user":
                subjects.add(value)
            elif kind == "apikey":
                if not _KEY_ID.fullmatch(value):
                    raise AllowListError(f"{shown}: an API key id is lowercase letters, digits and '-'")
                subjects.add(f"apikey:{value}")
            else:
                namespace, slash, name = value.partition("/")
                if (
                    not slash
                    or not _DNS_LABEL.fullmatch(namespace)
                    or not (name == "*" or _DNS_SUBDOMAIN.fullmatch(name))
                ):
                    raise AllowListError(f"{shown}: serviceaccount:<namespace>/<name>, <name> may be *")
                if name == "*":
                    prefixes.append(f"system:serviceaccount:{namespace}:")
                else:
                    subjects.add(f"system:serviceaccount:{namespace}:{name}")
        return cls(frozenset(groups), frozenset(subjects), tuple(prefixes))
