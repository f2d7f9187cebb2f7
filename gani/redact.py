"""Credentials in URIs: find them (to refuse them) and strip them (before printing).

Credentials never belong in a URI the pipeline is given: the input/output URIs and the
settings (`tracking.uri` included) travel as Prefect flow-run parameters, MLflow params and
tags, summary.json and log lines, and params.yaml lives in git. They come from the
environment instead (`AWS_*`, `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` /
`MLFLOW_TRACKING_TOKEN`, `PGPASSWORD` or `~/.pgpass` for a PostgreSQL store).
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl

_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#@]*)@")
_SECRET_WORDS = ("token", "secret", "password", "passwd", "pwd", "signature", "credential",
                 "key", "auth", "sig")


def redact_uri(uri: str) -> str:
    """`uri` without a `user:password@` part and without its query string."""
    return _USERINFO.sub(r"\1", str(uri)).split("?", 1)[0]


def has_password(uri: str) -> bool:
    """True when the URI embeds a password (`scheme://user:password@host`)."""
    m = _USERINFO.match(str(uri))
    return bool(m and ":" in m.group(2))


def uri_credentials(uri: str) -> str | None:
    """What credential a remote URI carries (a short phrase), or None.

    `user:password@`, any user info on an object store URI, or a query parameter whose name
    looks like a secret (token, signature, X-Amz-Credential ...). Local paths (no `://`)
    are never flagged: `@` and `?` are ordinary characters in file names.
    """
    uri = str(uri)
    if "://" not in uri:
        return None
    m = _USERINFO.match(uri)
    if m:
        return "user:password@" if ":" in m.group(2) else "user info (user@)"
    query = uri.split("?", 1)[1] if "?" in uri else ""
    for name, _ in parse_qsl(query.split("#", 1)[0], keep_blank_values=True):
        low = name.lower()
        if low.startswith("x-amz-") or any(w in low for w in _SECRET_WORDS):
            return f"query parameter {name!r}"
    return None
