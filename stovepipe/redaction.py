"""Keeping secrets out of log lines and error messages: the one place that knows what a secret
looks like.

A secret is the password of a URL's user information (``mysql://user:PASSWORD@host``), the
value of a query option whose name says it holds one (``ssl_password``, any ``*password``,
``*token``, ``*secret``, ``*passphrase``), and every value registered with
:func:`register_secret` (the bearer tokens the server accepts, say).

* :func:`redact` masks one URL for display.
* :func:`redact_text` masks free text (an error message, a driver's exception, a log line).
* :class:`RedactingFilter`, installed on every log handler by :func:`install_log_filter`,
  passes each record through :func:`redact_text` (its exception text included).

Masking is structural: in anything shaped like a URL (``scheme://...``) the password of the
user information and the values of secret options are masked where they stand, and the
scheme, the host and the option names are never touched, so a password such as ``redis`` or
``e`` leaves ``redis://...?ssl_password=***`` readable. Outside those positions (free text,
a URL's path and other option values) a secret known by value (registered, or of a ``urls``
given) is masked only as a whole occurrence (not inside a longer word) and only if it has at
least :data:`MIN_FREE_TEXT_LENGTH` characters and is not the name of a URL scheme in the
text: a shorter one would match ordinary words and so garble the message and show where the
secret is, and messages name schemes in words ("redis URL"). Such a secret is still masked
in its URL.
"""

from __future__ import annotations

import logging
import re
import threading
import urllib.parse
from collections.abc import Iterable

MASK = "***"
MIN_FREE_TEXT_LENGTH = 4
"""Secrets shorter than this are masked in their URL only, never searched for in free text."""

_SECRET_OPTION = re.compile(r"(password|passwd|passphrase|token|secret)$", re.IGNORECASE)
# Something shaped like a URL in free text: from its scheme to the next space or quote.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>]*")
# A secret option standing outside a URL's query, as in ``ssl_password=VALUE`` of a message.
_OPTION_VALUE = re.compile(
    r"((?<![A-Za-z0-9_])[A-Za-z0-9_.-]*(?:password|passwd|passphrase|token|secret)=)"
    r"[^&;#\s'\"]*",
    re.IGNORECASE,
)
# What a whole occurrence may not touch on either side: a letter, a digit or an underscore.
_WORD = "A-Za-z0-9_"

_lock = threading.Lock()
_registered: set[str] = set()


def is_secret_option(name: str) -> bool:
    """Whether a URL query option of this name holds a secret (``ssl_password``, ...)."""
    return _SECRET_OPTION.search(name) is not None


def register_secret(*values: str) -> None:
    """Mask these values wherever :func:`redact_text` (and so every log line) meets them as
    whole occurrences, for the rest of the process (values shorter than
    :data:`MIN_FREE_TEXT_LENGTH` are ignored: see the module)."""
    with _lock:
        _registered.update(value for value in values if len(value) >= MIN_FREE_TEXT_LENGTH)


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
    log line; the rest (scheme, host, port, path, other options) is kept as written."""
    return _mask_url(url, _Secrets(secrets_of(url)))


def redact_text(text: str, urls: Iterable[str] = ()) -> str:
    """``text`` with the password and secret options of everything shaped like a URL
    masked, and every registered secret and every secret of ``urls`` masked where it stands
    as a whole occurrence (see the module for which positions and lengths)."""
    given = [url for url in urls if url]
    secrets = [secret for url in given for secret in secrets_of(url)]
    with _lock:
        secrets += _registered
    # Messages name a URL's scheme in words ("redis URL ..."): a secret that is a scheme's
    # name is masked in its URL only.
    schemes = {url.partition(":")[0].lower() for url in [*given, *_URL.findall(text)]}
    known = _Secrets(secret for secret in secrets if secret.lower() not in schemes)
    # A given URL as written, first: its password may hold what ends a URL in free text.
    for url in sorted(set(given), key=len, reverse=True):
        text = text.replace(url, _mask_url(url, known))
    pieces = []
    position = 0
    for match in _URL.finditer(text):
        pieces.append(
            known.mask(_OPTION_VALUE.sub(rf"\g<1>{MASK}", text[position : match.start()]))
        )
        pieces.append(_mask_url(match.group(), known))
        position = match.end()
    pieces.append(known.mask(_OPTION_VALUE.sub(rf"\g<1>{MASK}", text[position:])))
    return "".join(pieces)


class _Secrets:
    """Secrets known by value, masked as whole occurrences, longest first (so a secret that
    contains another is masked whole)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        usable = sorted(
            {s for s in secrets if len(s) >= MIN_FREE_TEXT_LENGTH}, key=len, reverse=True
        )
        self._pattern = (
            re.compile(f"(?<![{_WORD}])(?:{'|'.join(re.escape(s) for s in usable)})(?![{_WORD}])")
            if usable
            else None
        )

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self._pattern is not None and text else text


def _mask_url(url: str, known: _Secrets) -> str:
    """``url`` (shaped ``scheme://...``) with the user information's password and the
    values of secret options masked where they stand, and known secrets masked in the path
    and the other option values; scheme, user name, host and option names untouched."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return known.mask(url)
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    netloc, tail = rest[:end], rest[end:]
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, password = userinfo.partition(":")
        netloc = f"{user}{colon}{MASK if password else ''}@{host}"
    path, question, query = tail.partition("?")
    query, hash_mark, fragment = query.partition("#")
    options = []
    for option in re.split(r"([&;])", query):
        name, equals, value = option.partition("=")
        if option in ("&", ";") or not equals:
            options.append(option)
        elif is_secret_option(name):
            options.append(f"{name}={MASK if value else ''}")
        else:
            options.append(f"{name}={known.mask(value)}")
    return (
        f"{scheme}://{netloc}{known.mask(path)}{question}{''.join(options)}"
        f"{hash_mark}{known.mask(fragment)}"
    )


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
