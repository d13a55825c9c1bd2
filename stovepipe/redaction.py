"""Keeping secrets out of log lines and error messages: the one place that knows what a secret
looks like.

A secret is the password of a URL's user information (``mysql://user:PASSWORD@host``), the
value of a query option whose name says it holds one (``ssl_password``, any ``*password``,
``*token``, ``*secret``, ``*passphrase``), and every value registered with
:func:`register_secret` (the bearer tokens the server accepts, say).

* :func:`redact` masks one URL for display.
* :func:`redact_text` masks free text (an error message, a driver's exception, a log line):
  each registered secret and each secret of the ``urls`` given, then anything shaped like a
  URL's password or a secret option, wherever it stands.
* :class:`RedactingFilter`, installed on every log handler by :func:`install_log_filter`,
  passes each record through :func:`redact_text` (its exception text included).
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable

MASK = "***"
_SECRET_OPTION = re.compile(r"(password|passwd|passphrase|token|secret)$", re.IGNORECASE)
# The password of user information in free text: scheme://user:PASSWORD@
_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^\s:/@?#]*:)[^\s@/?#]+@")
# A secret query option in free text: ?ssl_password=VALUE or &token=VALUE
_OPTION_VALUE = re.compile(
    r"([?&;][A-Za-z0-9_.-]*(?:password|passwd|passphrase|token|secret)=)[^&;#\s'\"]*",
    re.IGNORECASE,
)
# Secrets this short would mask ordinary words; they are still masked in URLs.
_MIN_SECRET_LENGTH = 3

_lock = threading.Lock()
_registered: set[str] = set()


def is_secret_option(name: str) -> bool:
    """Whether a URL query option of this name holds a secret (``ssl_password``, ...)."""
    return _SECRET_OPTION.search(name) is not None


def register_secret(*values: str) -> None:
    """Mask these values wherever :func:`redact_text` (and so every log line) meets them,
    for the rest of the process."""
    with _lock:
        _registered.update(value for value in values if len(value) >= _MIN_SECRET_LENGTH)


def register_url(url: str) -> None:
    """Register every secret ``url`` holds (see :func:`secrets_of`)."""
    register_secret(*secrets_of(url))


def secrets_of(url: str) -> list[str]:
    """The secrets of ``url``: its password and secret options' values, each as written and
    percent-decoded."""
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:  # a malformed port or bracket: fall back to patterns only
        return []
    found = []
    if password:
        found += [password, urllib.parse.unquote(password)]
    for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
        if is_secret_option(name) and value:
            found += [value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)]
    return [secret for secret in dict.fromkeys(found) if secret]


def redact(url: str) -> str:
    """``url`` with its password and the values of its secret options masked, fit for a
    log line; the rest (host, port, path, other options) is kept as written."""
    return _mask_patterns(_mask(url, secrets_of(url)))


def redact_text(text: str, urls: Iterable[str] = ()) -> str:
    """``text`` with every registered secret, every secret of ``urls``, and anything shaped
    like a URL's password or a secret option masked."""
    secrets = [secret for url in urls for secret in secrets_of(url)]
    with _lock:
        secrets += _registered
    return _mask_patterns(_mask(text, secrets))


def _mask(text: str, secrets: Iterable[str]) -> str:
    # Longest first, so a secret containing another is masked whole.
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def _mask_patterns(text: str) -> str:
    text = _URL_PASSWORD.sub(rf"\g<1>{MASK}@", text)
    return _OPTION_VALUE.sub(rf"\g<1>{MASK}", text)


class RedactingFilter(logging.Filter):
    """A handler filter that passes each record's message and exception text through
    :func:`redact_text`; it never drops a record."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact_text(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def install_log_filter(logger: logging.Logger | None = None) -> None:
    """Add a :class:`RedactingFilter` to every handler of ``logger`` (the root logger by
    default) that has none yet."""
    target = logger if logger is not None else logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
