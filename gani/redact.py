"""Credentials in URIs: find them (to refuse them) and strip them (before anything is written).

Credentials never belong in a URI the pipeline is given: the input/output URIs and the
settings (`tracking.uri` included) travel as Prefect flow-run parameters, MLflow params and
tags, summary.json and log lines, and params.yaml lives in git. They come from the
environment instead (`AWS_*`, `MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD` /
`MLFLOW_TRACKING_TOKEN`, `PGPASSWORD` or `~/.pgpass` for a PostgreSQL store).

Every form is covered, in one place:

- `uri_credentials(uri)` says what credential a URI carries, so it can be refused: user
  info (`user:password@`, a bare `TOKEN@host`; a database URI may name its user,
  `postgresql://gani@db/mlflow`, never a password), a query or fragment parameter whose
  name looks secret (`access_token`, `X-Amz-Signature`, `sig`, `token`, `key`, `password`,
  any `X-Amz-*` ...).
- `redact_uri(uri)` is the URI with its user info, query string and fragment removed.
- `redact_text(text)` applies that to every URI inside free text (an exception message, a
  log line) and blanks `secret_name=value` pairs and `Bearer <token>` outside URIs too; `redact_obj` does it to
  every string of a JSON-like value. What the pipeline writes from an exception or a URI
  (summary.json, status.json details, MLflow tags, printed warnings and errors) goes
  through them.
"""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

# user info: everything up to the last '@' before the first '/', '?' or '#'
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)@")
_SECRET_WORDS = ("token", "secret", "password", "passwd", "pwd", "signature", "credential",
                 "key", "auth", "sig", "session", "jwt", "bearer")
# schemes whose URIs conventionally name a user (the password comes from PGPASSWORD & co.)
_DB_SCHEMES = ("postgresql", "postgres", "mysql", "mariadb", "mssql", "oracle", "cockroachdb")
# a URI inside free text: scheme://, then anything up to whitespace or a closing quote
_URI_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_PAIR_IN_TEXT = re.compile(
    r"(?i)\b([A-Za-z0-9_.-]*(?:" + "|".join(_SECRET_WORDS) + r"|x-amz-[A-Za-z-]+)"
    r"[A-Za-z0-9_.-]*)(\s*=\s*)([^\s&;,'\")\]}]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)([A-Za-z0-9._~+/=-]{8,})")
REDACTED = "***"


def redact_uri(uri: str) -> str:
    """`uri` without its user info (`user:password@`, `TOKEN@`), query string and fragment."""
    text = str(uri)
    if "://" not in text:
        return text     # a local path: '@', '?' and '#' are ordinary file-name characters
    return re.split(r"[?#]", _USERINFO.sub(r"\1", text), maxsplit=1)[0]


def redact_text(text: str) -> str:
    """Free text (an exception message, a log line) with every URI in it redacted
    (`redact_uri`), every `secret_name=value` pair and `Bearer <token>` blanked."""
    text = _URI_IN_TEXT.sub(lambda m: redact_uri(m.group(0)), str(text))
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
    return _PAIR_IN_TEXT.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)


def redact_obj(value: Any) -> Any:
    """A JSON-like value with `redact_text` applied to every string in it (keys too)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {redact_obj(k) if isinstance(k, str) else k: redact_obj(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_obj(v) for v in value)
    return value


def has_password(uri: str) -> bool:
    """True when the URI embeds a password (`scheme://user:password@host`)."""
    m = _USERINFO.match(str(uri))
    return bool(m and ":" in m.group(2))


def _secret_name(name: str) -> bool:
    low = name.lower()
    return low.startswith("x-amz-") or any(w in low for w in _SECRET_WORDS)


def uri_credentials(uri: str) -> str | None:
    """What credential a remote URI carries (a short phrase), or None.

    `user:password@`; any user info (`TOKEN@host`) except a database URI's user name; a
    query or fragment parameter whose name looks like a secret. Local paths (no `://`) are
    never flagged: `@`, `?` and `#` are ordinary characters in file names.
    """
    uri = str(uri).strip()
    if "://" not in uri:
        return None
    m = _USERINFO.match(uri)
    if m:
        if ":" in m.group(2):
            return "user:password@"
        scheme = m.group(1)[:-3].lower().split("+", 1)[0]
        if scheme not in _DB_SCHEMES:
            return "user info (user@ / token@)"
    rest = uri.split("://", 1)[1]
    query = rest.split("?", 1)[1].split("#", 1)[0] if "?" in rest.split("#", 1)[0] else ""
    fragment = rest.split("#", 1)[1] if "#" in rest else ""
    for where, part in (("query", query), ("fragment", fragment)):
        for name, _ in parse_qsl(part, keep_blank_values=True):
            if _secret_name(name):
                return f"{where} parameter {name!r}"
    if fragment and _secret_name(fragment):
        return "fragment"
    return None


class RedactingFilter:
    """A logging filter that passes every record through `redact_text` (message, arguments
    and traceback), so a handler never emits a secret a message or exception quoted."""

    def filter(self, record) -> bool:
        import traceback

        try:
            record.msg = redact_text(record.getMessage())
            record.args = ()
            if record.exc_info and not record.exc_text:
                record.exc_text = "".join(traceback.format_exception(*record.exc_info)).rstrip()
            if record.exc_text:
                record.exc_text = redact_text(record.exc_text)
        except Exception:  # noqa: BLE001 - a log line must never fail the run
            pass
        return True


_FILTER = RedactingFilter()


def install_log_redaction() -> int:
    """Add `RedactingFilter` to every logging handler there is now (root, Prefect's console
    and API handlers, ...); idempotent. Returns how many handlers it was added to."""
    import logging

    loggers = [logging.getLogger()] + [lg for lg in logging.Logger.manager.loggerDict.values()
                                       if isinstance(lg, logging.Logger)]
    added = 0
    for logger in loggers:
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
                added += 1
    return added
