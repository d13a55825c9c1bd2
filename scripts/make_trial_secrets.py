"""Write a trial set of TLS certificates and bearer tokens, for trying the secure setup.

    python scripts/make_trial_secrets.py [DIRECTORY]   # default .stovepipe/secrets

Writes ``ca.crt`` (a fresh CA), ``server.crt`` and ``server.key`` (for ``127.0.0.1`` and
``localhost``), ``client.crt`` and ``client.key`` (for mutual TLS), ``tokens`` (the server's
tokens file: one token with both scopes) and ``client.token`` (that token, for
``stovepipe --token-file``). ``docker compose --profile secure up stovepipe-secure`` serves
with them. A real deployment uses certificates of its own CA and tokens of its own making;
these keys are readable by any user (the container runs as another), which is fine for a
trial only. Needs the development install (``make dev``), which brings ``cryptography``.
"""

from __future__ import annotations

import argparse
import pathlib
import secrets

from stovepipe.testing import make_certificates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", nargs="?", default=".stovepipe/secrets", type=pathlib.Path)
    directory: pathlib.Path = parser.parse_args().directory
    certificates = make_certificates(directory)
    token = secrets.token_hex(32)
    (directory / "tokens").write_text(f"# scopes     token\ningest,read {token}\n")
    (directory / "client.token").write_text(token + "\n")
    # Only what the server and a client use: no CA key, no second CA's client.
    for unused in ("ca.key", "rogue-client.crt", "rogue-client.key"):
        (directory / unused).unlink()
    for path in directory.iterdir():
        path.chmod(0o644)  # the container's user must read them: a trial, not production
    print(f"wrote a CA, server and client certificates and a token to {directory}")
    print(f"CA certificate: {certificates.ca}")


if __name__ == "__main__":
    main()
