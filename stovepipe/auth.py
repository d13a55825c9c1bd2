"""Who may call: bearer tokens with scopes, checked by a server interceptor, and the server's
and the client's TLS material.

Tokens come from a file (``tokens_file``) or the environment (``STOVEPIPE_TOKENS``), never
from the command line, where any user of the machine could read them. Each entry is
``SCOPE[,SCOPE...] TOKEN``: one per line in a file (``#`` starts a comment), separated by
newlines or ``;`` in the environment. A token is at least 16 characters of
``A-Z a-z 0-9 - . _ ~ + / =`` (the bearer token alphabet); ``openssl rand -hex 32`` makes one.

Scopes: ``ingest`` allows ``Ingest``; ``read`` allows ``GetRequest``, ``GetQueue``,
``ListRequests`` and server reflection. ``Ping`` and the health service stay open, so load
balancers and liveness probes need no token (they touch no state and disclose only the
version). With tokens configured, a call without a valid ``authorization: Bearer TOKEN``
header fails ``UNAUTHENTICATED``; one whose token lacks the method's scope,
``PERMISSION_DENIED``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import ipaddress
import pathlib
import re
import socket
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc

SCOPES = ("ingest", "read")
TOKENS_ENV = "STOVEPIPE_TOKENS"
MIN_TOKEN_LENGTH = 16
_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]+")

OPEN_METHODS = frozenset(
    {
        "/stovepipe.v1.Stovepipe/Ping",
        "/grpc.health.v1.Health/Check",
        "/grpc.health.v1.Health/Watch",
    }
)
"""Methods any caller may use: probes must work without a token."""
_SCOPE_OF = {"/stovepipe.v1.Stovepipe/Ingest": "ingest"}
_READ = "read"


class TokenError(ValueError):
    """A token entry is malformed; the message names where, never the token."""


@dataclasses.dataclass(frozen=True)
class Token:
    """A bearer token and the scopes it grants; the value never shows in a ``repr``."""

    value: str = dataclasses.field(repr=False)
    scopes: frozenset[str]


def required_scope(method: str) -> str | None:
    """The scope a call of ``method`` (``/package.Service/Method``) needs; ``None``: open."""
    if method in OPEN_METHODS:
        return None
    return _SCOPE_OF.get(method, _READ)


def parse_tokens(text: str, source: str) -> list[Token]:
    """The tokens of ``text`` (entries as the module says, one per line or ``;``-separated).

    Raises :class:`TokenError` naming ``source`` and the entry's number for a malformed
    entry, an unknown scope, a short token or one given twice.
    """
    tokens: list[Token] = []
    seen: set[str] = set()
    entries = [line.split("#", 1)[0].strip() for line in re.split(r"[\n;]", text)]
    for number, entry in enumerate(entries, start=1):
        if not entry:
            continue
        where = f"{source}, entry {number}"
        fields = entry.split()
        if len(fields) != 2:
            raise TokenError(f"{where}: expected SCOPE[,SCOPE...] TOKEN")
        scope_text, value = fields
        scopes = frozenset(scope.strip() for scope in scope_text.split(",") if scope.strip())
        unknown = sorted(scopes - set(SCOPES))
        if not scopes or unknown:
            raise TokenError(
                f"{where}: unknown scope(s) {', '.join(unknown) or '(none)'}; "
                f"use {', '.join(SCOPES)}"
            )
        if len(value) < MIN_TOKEN_LENGTH or not _TOKEN.fullmatch(value):
            raise TokenError(
                f"{where}: a token is at least {MIN_TOKEN_LENGTH} characters of "
                "A-Z a-z 0-9 - . _ ~ + / ="
            )
        if value in seen:
            raise TokenError(f"{where}: the token is given twice")
        seen.add(value)
        tokens.append(Token(value=value, scopes=scopes))
    return tokens


def read_tokens_file(path: pathlib.Path) -> list[Token]:
    """The tokens in the file at ``path``; :class:`TokenError` if unreadable, malformed or
    holding no token (empty, or comments only): a tokens file is there to turn
    authentication on, and one that held none would silently leave every call allowed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TokenError(f"cannot read tokens_file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        raise TokenError(f"tokens_file {path} is not UTF-8 text") from None
    tokens = parse_tokens(text, f"tokens_file {path}")
    if not tokens:
        raise TokenError(
            f"tokens_file {path} holds no token; add SCOPE TOKEN lines, or unset tokens_file"
        )
    return tokens


def _digest(value: str | bytes) -> bytes:
    data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value
    return hashlib.sha256(data).digest()


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Checks each call's bearer token against ``tokens`` and the method's scope.

    Tokens are compared as SHA-256 digests with :func:`hmac.compare_digest`, against every
    configured token whatever matched, so the time taken says nothing about how much of a
    guess was right or which token it resembled.
    """

    def __init__(self, tokens: Iterable[Token]) -> None:
        self._tokens = [(_digest(token.value), token.scopes) for token in tokens]

    def scopes_of(self, presented: str | bytes) -> frozenset[str] | None:
        """The scopes the presented token grants; ``None`` if it is no configured token."""
        digest = _digest(presented)
        granted: frozenset[str] | None = None
        for stored, scopes in self._tokens:
            if hmac.compare_digest(digest, stored):
                granted = scopes
        return granted

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        scope = required_scope(handler_call_details.method)
        if scope is None:
            return continuation(handler_call_details)
        presented = _bearer(handler_call_details.invocation_metadata)
        if presented is None:
            return denied(
                continuation(handler_call_details),
                grpc.StatusCode.UNAUTHENTICATED,
                "missing bearer token (authorization: Bearer TOKEN)",
            )
        scopes = self.scopes_of(presented)
        if scopes is None:
            return denied(
                continuation(handler_call_details),
                grpc.StatusCode.UNAUTHENTICATED,
                "invalid bearer token",
            )
        if scope not in scopes:
            return denied(
                continuation(handler_call_details),
                grpc.StatusCode.PERMISSION_DENIED,
                f"the token lacks the scope {scope!r}",
            )
        return continuation(handler_call_details)


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str | bytes | None:
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    return None


def denied(
    handler: grpc.RpcMethodHandler[Any, Any] | None, code: grpc.StatusCode, detail: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of ``handler``'s kind that fails every call with ``code`` and ``detail``."""

    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, detail)

    if handler is None or handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(deny)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(deny)
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(deny)
    return grpc.stream_stream_rpc_method_handler(deny)


@dataclasses.dataclass(frozen=True)
class ServerTLS:
    """PEM bytes of the listener's certificate chain and key, and of the CA whose
    certificates clients must present (``None``: clients are not asked for one)."""

    certificate: bytes
    key: bytes = dataclasses.field(repr=False)
    client_ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        """gRPC server credentials; mutual TLS (a client certificate required) with a CA."""
        return grpc.ssl_server_credentials(
            [(self.key, self.certificate)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def read_pem(path: pathlib.Path, setting: str) -> bytes:
    """The bytes of a PEM file; ``ValueError`` naming ``setting`` if unreadable or not PEM."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {setting} {path}: {error.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ValueError(f"{setting} {path} is not a PEM file")
    return data


def check_server_files(
    certificate: pathlib.Path, key: pathlib.Path, client_ca: pathlib.Path | None
) -> None:
    """Check that the listener's PEM files can serve (see :func:`check_tls_files`), named
    by their settings ``tls_cert``, ``tls_key`` and ``tls_client_ca``.

    Why here: gRPC reports each of these at bind time only as "failed to bind".
    """
    check_tls_files(certificate, key, client_ca, names=("tls_cert", "tls_key", "tls_client_ca"))


def check_tls_files(
    certificate: str | pathlib.Path | None,
    key: str | pathlib.Path | None,
    ca: str | pathlib.Path | None,
    *,
    names: tuple[str, str, str],
) -> None:
    """Check PEM files as OpenSSL reads them: ``certificate`` and ``ca`` (each if given) hold
    a certificate, ``key`` (with ``certificate``) an unencrypted private key that matches it.
    Raises ``ValueError`` naming the file by ``names`` (certificate's, key's, CA's: a setting
    or a flag), one line."""
    cert_name, key_name, ca_name = names
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    for name, path in ((cert_name, certificate), (ca_name, ca)):
        if path is None:
            continue
        try:
            context.load_verify_locations(cafile=path)
        except (ssl.SSLError, OSError):
            raise ValueError(f"{name} {path}: no certificate can be read from it") from None
    if certificate is None or key is None:
        return

    def encrypted() -> bytes:
        raise ValueError(f"{key_name} {key} is encrypted; it must be given unencrypted")

    try:
        context.load_cert_chain(certificate, key, password=encrypted)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            raise ValueError(f"{key_name} {key} does not match {cert_name} {certificate}") from None
        raise ValueError(f"{key_name} {key}: no private key can be read from it") from None
    except OSError as error:
        raise ValueError(f"cannot read {key_name} {key}: {error.strerror}") from None


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` resolves to is a loopback one (``0.0.0.0`` and ``::``,
    which listen everywhere, are not)."""
    host = host.removeprefix("[").removesuffix("]")
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addresses = {info[4][0] for info in infos}
    return bool(addresses) and all(
        ipaddress.ip_address(str(address).split("%", 1)[0]).is_loopback for address in addresses
    )
