"""docker-compose.yml and the Dockerfile: pinned images, health checks, and ports matching the
URLs the README documents for the test servers."""

from __future__ import annotations

import pathlib
import re
import urllib.parse
from typing import Any

import pytest
import yaml

from stovepipe import config

ROOT = pathlib.Path(__file__).resolve().parent.parent
# A tag that names one release (x.y.z, optionally v-prefixed and suffixed), or a digest.
PINNED = re.compile(r"^[\w./-]+(:v?\d+\.\d+\.\d+[\w.-]*|@sha256:[0-9a-f]{64})$")
BACKEND_SERVICES = {"mysql": "mysql", "redis": "redis", "etcd": "etcd"}  # URL scheme -> service


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def published_ports(service: dict[str, Any]) -> set[int]:
    """Host ports a service publishes (``[ip:]host:container`` short syntax)."""
    return {int(str(port).split(":")[-2]) for port in service.get("ports", [])}


def documented_test_urls() -> dict[str, str]:
    """The test server URLs the README exports (``STOVEPIPE_TEST_<SCHEME>_URL=...``), by scheme."""
    readme = (ROOT / "README.md").read_text()
    urls = re.findall(r"^export STOVEPIPE_TEST_\w+_URL=(\S+)$", readme, re.MULTILINE)
    by_scheme = {urllib.parse.urlsplit(url).scheme: url for url in urls}
    assert set(by_scheme) == set(BACKEND_SERVICES), urls
    return by_scheme


def test_compose_images_are_pinned_to_a_release() -> None:
    for name, service in services().items():
        if "build" in service:
            continue
        assert PINNED.match(service["image"]), f"{name}: {service['image']} is not pinned"


def test_dockerfile_base_image_is_pinned_to_a_release() -> None:
    (base,) = re.findall(r"^FROM\s+(\S+)", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    assert PINNED.match(base), base


def test_compose_builds_the_server_from_the_dockerfile() -> None:
    server = services()["stovepipe"]
    assert server["build"] == "."
    assert (ROOT / "Dockerfile").is_file()
    assert published_ports(server) == {config.DEFAULT_PORT, 9464}
    assert server["environment"]["STOVEPIPE_METRICS_LISTEN"].endswith(":9464")


def test_compose_services_have_health_checks() -> None:
    for name, service in services().items():
        check = service.get("healthcheck", {})
        assert check.get("test", [None])[0] == "CMD", f"{name} has no exec-form health check"
        assert check.get("interval") and check.get("retries"), name


@pytest.mark.parametrize("scheme", sorted(BACKEND_SERVICES))
def test_compose_ports_match_the_documented_test_urls(scheme: str) -> None:
    url = urllib.parse.urlsplit(documented_test_urls()[scheme])
    service = services()[BACKEND_SERVICES[scheme]]
    assert url.hostname == "127.0.0.1"
    assert url.port in published_ports(service)
    if scheme == "mysql":
        assert service["environment"]["MYSQL_DATABASE"] == url.path.lstrip("/")
        assert url.username == "root"
        assert service["environment"]["MYSQL_ALLOW_EMPTY_PASSWORD"] == "yes"


def test_the_secure_compose_service_serves_mutual_tls_and_tokens_without_reflection() -> None:
    secure = services()["stovepipe-secure"]
    environment = secure["environment"]
    assert secure["profiles"] == ["secure"]
    for setting in ("TLS_CERT", "TLS_KEY", "TLS_CLIENT_CA", "TOKENS_FILE"):
        assert environment[f"STOVEPIPE_{setting}"].startswith("/run/secrets/stovepipe/")
    assert environment["STOVEPIPE_REFLECTION"] == "false"
    assert "STOVEPIPE_METRICS_LISTEN" not in environment
    # The health check's ping speaks mutual TLS too (it needs no token).
    assert {environment[f"STOVEPIPE_{name}"] for name in ("CA", "CERT", "KEY")} <= {
        f"/run/secrets/stovepipe/{file}" for file in ("ca.crt", "client.crt", "client.key")
    }
    assert all(str(port).startswith("127.0.0.1:") for port in secure["ports"])


def test_the_dockerfile_shows_tls_and_tokens_for_a_reachable_port() -> None:
    text = (ROOT / "Dockerfile").read_text()
    for variable in ("STOVEPIPE_TLS_CERT", "STOVEPIPE_TLS_CLIENT_CA", "STOVEPIPE_TOKENS_FILE"):
        assert variable in text
