"""Each backend distribution depends on exactly the core it was released with, so an install
from a checkout or from built wheels never pairs a backend with another core."""

from __future__ import annotations

import pathlib
import re
import tomllib
from typing import Any

import pytest

import stovepipe

ROOT = pathlib.Path(__file__).resolve().parent.parent
BACKENDS = sorted(path.parent for path in ROOT.glob("backends/*/pyproject.toml"))


def project(directory: pathlib.Path) -> dict[str, Any]:
    loaded: dict[str, Any] = tomllib.loads((directory / "pyproject.toml").read_text())["project"]
    return loaded


def test_the_core_distribution_and_package_report_one_version() -> None:
    assert project(ROOT)["version"] == stovepipe.__version__


@pytest.mark.parametrize("backend", BACKENDS, ids=[path.name for path in BACKENDS])
def test_every_backend_pins_stovepipe_to_the_core_version(backend: pathlib.Path) -> None:
    requirements = [
        requirement
        for requirement in project(backend)["dependencies"]
        if re.match(r"stovepipe\b(?![-_.\w])", requirement)
    ]
    assert requirements == [f"stovepipe=={project(ROOT)['version']}"]


def test_every_backend_is_checked() -> None:
    assert {"etcd", "mysql", "redis"} <= {path.name for path in BACKENDS}
