"""One parser for the query options of every storage and messaging URL.

Every backend and messaging implementation reads its options through :class:`URLOptions`, so
they all follow the same rules:

* The query is ``name=value`` pairs joined by ``&`` (percent-encoded as usual); anything else
  is refused.
* An option given twice is refused (which one was meant?).
* An option the URL's implementation does not know is refused, naming the known ones.
* Typed values are parsed strictly: an integer is decimal digits with an optional sign; a
  number is a finite decimal (``inf``, ``nan``, ``1_0`` and surrounding spaces are refused);
  a boolean is ``true``/``false``, ``yes``/``no`` or ``1``/``0`` (any case).
* Seconds (``timeout`` and the like) must be finite and above 0, and within a maximum where
  the engine has one.

Every error is a :class:`URLOptionError` (a ``ValueError``) of one line that names the URL with
its secrets masked (:func:`stovepipe.redaction.redact`) and never shows the value of a secret
option.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Final

from stovepipe.redaction import is_secret_option, redact

TRUE_WORDS: Final = frozenset({"true", "yes", "1"})
FALSE_WORDS: Final = frozenset({"false", "no", "0"})
_INTEGER: Final = re.compile(r"[+-]?[0-9]+")
_NUMBER: Final = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class URLOptionError(ValueError):
    """A URL's query options break a rule of :mod:`stovepipe.urloptions`; the message is one
    line naming the URL (redacted) and the option."""


class URLOptions:
    """The query options of ``url``, checked against ``known`` (their names).

    ``what`` names the URL's kind in messages (``"mysql"``, ``"redis queue"``). Raises
    :class:`URLOptionError` if the query is malformed, repeats an option or holds one not in
    ``known``. The typed readers then return each option's value, or its default when the
    URL does not give it.
    """

    def __init__(self, url: str, what: str, known: Iterable[str]) -> None:
        self.url = url
        self.what = what
        self.known = frozenset(known)
        query = url.split("#", 1)[0].partition("?")[2]
        try:
            pairs = urllib.parse.parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            # parse_qsl's message quotes the field, which may hold a secret.
            raise self.error("the query must be name=value pairs joined by &") from None
        options: dict[str, str] = {}
        for name, value in pairs:
            if name in options:
                raise self.error(f"option {name} is given more than once; give it once")
            options[name] = value
        unknown = sorted(set(options) - self.known)
        if unknown:
            known_names = ", ".join(sorted(self.known)) or "none"
            raise self.error(f"unknown option(s) {', '.join(unknown)}; known: {known_names}")
        self.given: dict[str, str] = options
        """Every option the URL gives, by name, as written (percent-decoded)."""

    def error(self, reason: str) -> URLOptionError:
        """A :class:`URLOptionError` for this URL: ``"<what> URL <redacted url>: <reason>"``."""
        return URLOptionError(f"{self.what} URL {redact(self.url)}: {reason}")

    def __contains__(self, name: object) -> bool:
        return name in self.given

    def _invalid(self, name: str, expected: str) -> URLOptionError:
        value = self.given[name]
        shown = "" if is_secret_option(name) else f", not {value!r}"
        return self.error(f"option {name} must be {expected}{shown}")

    def text(self, name: str, default: str) -> str:
        """The option as written, or ``default``."""
        return self.given.get(name, default)

    def optional_text(self, name: str) -> str | None:
        """The option as written; ``None`` when absent or empty."""
        return self.given.get(name) or None

    def choice(self, name: str, default: str, choices: Sequence[str]) -> str:
        """One of ``choices`` (exactly as written), or ``default``."""
        if name not in self.given:
            return default
        if self.given[name] not in choices:
            raise self._invalid(name, "one of " + ", ".join(choices))
        return self.given[name]

    def boolean(self, name: str, default: bool) -> bool:
        """``true``/``yes``/``1`` or ``false``/``no``/``0`` (any case), or ``default``."""
        value = self.optional_boolean(name)
        return default if value is None else value

    def optional_boolean(self, name: str) -> bool | None:
        """Like :meth:`boolean`, ``None`` when absent."""
        if name not in self.given:
            return None
        word = self.given[name].lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise self._invalid(name, "true or false")

    def integer(
        self, name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        """A decimal integer in ``[minimum, maximum]``, or ``default``."""
        if name not in self.given:
            return default
        text = self.given[name]
        value = int(text) if _INTEGER.fullmatch(text) else None
        if value is None or (minimum is not None and value < minimum):
            raise self._invalid(name, _bounded("an integer", minimum, maximum))
        if maximum is not None and value > maximum:
            raise self._invalid(name, _bounded("an integer", minimum, maximum))
        return value

    def number(
        self,
        name: str,
        default: float,
        *,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> float:
        """A finite decimal number in ``[minimum, maximum]``, or ``default``."""
        if name not in self.given:
            return default
        value = self._finite(name)
        if value is None or not _within(value, minimum, maximum, above=False):
            raise self._invalid(name, _bounded("a finite number", minimum, maximum))
        return value

    def seconds(self, name: str, default: float, *, maximum: float | None = None) -> float:
        """A finite number of seconds above 0 (and at most ``maximum``), or ``default``."""
        if name not in self.given:
            return default
        value = self._finite(name)
        if value is None or not _within(value, 0.0, maximum, above=True):
            limit = f" and at most {_number_text(maximum)}" if maximum is not None else ""
            raise self._invalid(name, f"a finite number of seconds above 0{limit}")
        return value

    def _finite(self, name: str) -> float | None:
        text = self.given[name]
        if not _NUMBER.fullmatch(text):
            return None
        value = float(text)
        return value if math.isfinite(value) else None  # 1e999 overflows to inf


def _within(value: float, minimum: float | None, maximum: float | None, *, above: bool) -> bool:
    if minimum is not None and (value <= minimum if above else value < minimum):
        return False
    return maximum is None or value <= maximum


def _bounded(kind: str, minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"{kind} from {_number_text(minimum)} to {_number_text(maximum)}"
    if minimum is not None:
        return f"{kind} of at least {_number_text(minimum)}"
    if maximum is not None:
        return f"{kind} of at most {_number_text(maximum)}"
    return kind


def _number_text(value: float) -> str:
    """``5``, ``0.5``, ``31536000``: as written in a URL, never in exponent form."""
    return str(int(value)) if value == int(value) else f"{value:f}".rstrip("0")
