"""``stovepipe conformance``: the suites as shipped, run from anywhere, and their exit status.

The last test installs the built distributions into a new virtual environment, as a backend
author would, and runs the storage suite there: the proof that what ships works on its own.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import venv
import zipfile

import pytest

from stovepipe.conformance.plugin import messaging_capabilities
from stovepipe.testing import run_cli

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _register_broken_backends(site: pathlib.Path) -> dict[str, str]:
    """An environment whose ``stovepipe.storage`` entry points include the broken backends."""
    dist_info = site / "stovepipe_broken_backends-0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stovepipe-broken-backends\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[stovepipe.storage]\n"
        "lowercases-keys = stovepipe.conformance.storage.broken:open_lowercases_keys\n"
        "retries-forever = stovepipe.conformance.storage.broken:open_retries_forever\n"
        "cached-get = stovepipe.conformance.storage.broken:open_cached_get\n"
    )
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }


def _conformance(
    *args: str, cwd: pathlib.Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stovepipe.cli", "conformance", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_conformance_runs_the_storage_suite_from_any_directory_and_exits_0_when_it_passes(
    tmp_path: pathlib.Path,
) -> None:
    result = _conformance("storage", "memory://", "-q", "-k", "request_store", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_conformance_runs_the_messaging_suite_from_any_directory(tmp_path: pathlib.Path) -> None:
    result = _conformance(
        "messaging", "memory://", "-q", "-k", "test_delivery and dead_letter", cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout


def test_conformance_exits_1_when_a_rule_fails(tmp_path: pathlib.Path) -> None:
    env = _register_broken_backends(tmp_path / "site")
    result = _conformance(
        "storage", "lowercases-keys://", "-q", "-k", "keys_are_exact", cwd=tmp_path, env=env
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "test_keys_are_exact_for_request_ids" in result.stdout


def test_conformance_fails_a_test_that_hangs_at_its_time_limit_showing_where_it_waits(
    tmp_path: pathlib.Path,
) -> None:
    env = _register_broken_backends(tmp_path / "site")
    started = time.monotonic()
    result = _conformance(
        "storage", "retries-forever://", "-q", "-k", "test_create_then_get_returns_the_request",
        "--conformance-timeout=2", cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "took longer than the limit of 2 s" in result.stdout
    assert "in get" in result.stdout  # the hanging call, on the main thread's stack
    assert time.monotonic() - started < 60


def test_conformance_a_backend_that_hung_once_fails_its_other_tests_at_once(
    tmp_path: pathlib.Path,
) -> None:
    env = _register_broken_backends(tmp_path / "site")
    started = time.monotonic()
    result = _conformance(
        # -rN: no short summary, whose lines repeat each failure's message when the
        # terminal is wide enough.
        "storage", "retries-forever://", "-q", "-rN", "-k", "test_request_store",
        "--conformance-timeout=3", cwd=tmp_path, env=env, timeout=120,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stdout.count("took longer than the limit of 3 s") == 1, result.stdout
    assert "hung past the time limit against the same retries-forever target" in result.stdout
    assert elapsed < 60, f"{elapsed:.0f} s: one time limit, not one per test"


def test_conformance_catches_reads_served_from_a_per_instance_cache(
    tmp_path: pathlib.Path,
) -> None:
    env = _register_broken_backends(tmp_path / "site")
    for _ in range(3):  # caught every run, not by chance
        result = _conformance(
            "storage", f"cached-get:///{tmp_path}/cached.db", "-q", "-k", "live_instances",
            cwd=tmp_path, env=env,
        )  # fmt: skip
        assert result.returncode == 1, result.stdout + result.stderr
        assert "test_read_after_write_between_two_live_instances" in result.stdout


def test_conformance_an_explicit_url_that_cannot_be_opened_fails_naming_the_error(
    tmp_path: pathlib.Path,
) -> None:
    result = _conformance("storage", "nosuch://x", "-q", "-x", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "no storage backend serves nosuch://" in result.stdout
    assert "skipped" not in result.stdout


@pytest.mark.parametrize("target", ["sqlite:{tmp}/x.db", "127.0.0.1:1"])
def test_conformance_a_malformed_url_fails_naming_the_error_never_skips(
    target: str, tmp_path: pathlib.Path
) -> None:
    # Not an engine's bare name: a URL given explicitly, which must open.
    result = _conformance(
        "storage", target.format(tmp=tmp_path), "-q", "-x", "-k", "test_request_store",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the URL was given explicitly: it must work" in result.stdout
    assert "skipped" not in result.stdout
    assert not (tmp_path / "x.db").exists()


def test_messaging_suite_selects_the_durable_tests_by_declared_capability(
    tmp_path: pathlib.Path,
) -> None:
    assert messaging_capabilities("memory://") == frozenset()
    sqlite = f"sqlite:///{tmp_path}/queue.db"
    assert messaging_capabilities(sqlite) >= {"durable", "shared"}
    memory = _conformance("messaging", "memory://", "-q", "-rs", "-k", "test_leases", cwd=tmp_path)
    assert memory.returncode == 0, memory.stdout + memory.stderr
    assert "does not declare the capability 'durable'" in memory.stdout
    assert " passed" not in memory.stdout
    durable = _conformance("messaging", sqlite, "-q", "-rs", "-k", "test_leases", cwd=tmp_path)
    assert durable.returncode == 0, durable.stdout + durable.stderr
    assert " passed" in durable.stdout and "skipped" not in durable.stdout


def test_queue_url_still_selects_the_messaging_url_and_warns_that_it_is_deprecated(
    tmp_path: pathlib.Path,
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--pyargs", "stovepipe.conformance.messaging",
         "-c", os.devnull, "-p", "no:cacheprovider", "--import-mode=importlib", "-v",
         "--queue-url=memory://", "-k", "test_delivery and dead_letter"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--queue-url is deprecated: use --messaging-url" in result.stdout + result.stderr
    assert "[memory] PASSED" in result.stdout
    assert "[sqlite]" not in result.stdout


def test_conformance_of_an_unknown_suite_is_a_usage_error() -> None:
    result = run_cli("conformance", "nosuch", "memory://")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


def test_packaging_lists_every_package_and_maps_the_suites_into_stovepipe() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "stovepipe").rglob("__init__.py")
    }
    mapped = {
        package: directory
        for package, directory in setuptools["package-dir"].items()
        if (ROOT / directory / "__init__.py").exists()
    }
    assert set(setuptools["packages"]) == on_disk | set(mapped)
    assert mapped == {
        "stovepipe.conformance.storage": "contract_tests",
        "stovepipe.conformance.messaging": "messaging_tests",
    }


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Wheels of the service and of the Redis backend, built from a copy of the working tree
    (a build leaves build/ behind, whose stale files a later build would ship)."""
    out = tmp_path_factory.mktemp("wheels")
    tree = tmp_path_factory.mktemp("tree") / "stovepipe"
    ignored = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, tree, ignore=ignored)
    for project in (tree, tree / "backends" / "redis"):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
             "--no-build-isolation", "--wheel-dir", str(out), str(project)],
            check=True, timeout=300, capture_output=True,
        )  # fmt: skip
    return {wheel.name.split("-")[0]: wheel for wheel in out.glob("*.whl")}


def test_the_wheel_ships_both_suites_under_stovepipe_and_no_top_level_test_package(
    wheels: dict[str, pathlib.Path],
) -> None:
    with zipfile.ZipFile(wheels["stovepipe"]) as wheel:
        names = wheel.namelist()
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        requires = wheel.read(metadata).decode()
        entry_points = wheel.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    tops = {name.split("/")[0] for name in names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"stovepipe"}
    for module in ("storage/conftest.py", "storage/workers.py", "messaging/consumer_process.py"):
        assert f"stovepipe/conformance/{module}" in names
    assert "stovepipe-conformance = stovepipe.conformance.plugin" in entry_points
    assert (
        "pytest==" in requires
        and "hypothesis==" in requires
        and "mirakuru==" in requires
        and "extra == 'testing'" in (requires.replace('"', "'"))
    )


def test_a_fresh_environment_with_the_package_installed_passes_the_storage_suite(
    wheels: dict[str, pathlib.Path], tmp_path: pathlib.Path
) -> None:
    # The wheels go in without their dependencies, which come from this environment through
    # a .pth file: no download, and this checkout is not importable from the new one.
    environment = tmp_path / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True, timeout=60,
    ).stdout.strip()  # fmt: skip
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         *map(str, wheels.values())],
        check=True, timeout=300, capture_output=True,
    )  # fmt: skip
    (pathlib.Path(site) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    result = subprocess.run(
        [str(environment / "bin" / "stovepipe"), "conformance", "storage",
         f"sqlite:///{tmp_path}/conformance.db", "-q"],
        capture_output=True, text=True, cwd="/", timeout=600, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{environment}" in subprocess.run(
        [str(python), "-c", "import stovepipe.conformance.storage as s; print(s.__file__)"],
        check=True, capture_output=True, text=True, timeout=60, cwd="/",
    ).stdout  # fmt: skip


def test_a_backends_own_tests_reuse_the_suites_fixtures_with_a_star_import(
    tmp_path: pathlib.Path,
) -> None:
    """What "Writing a backend" tells an author: a star import in a conftest.py gives their
    own tests the suite's fixtures (so none of those may be private to the module)."""
    (tmp_path / "conftest.py").write_text(
        "from stovepipe.conformance.storage.conftest import *  # noqa: F403\n", encoding="utf-8"
    )
    (tmp_path / "test_own.py").write_text(
        "from stovepipe.entity import Queue\n\n\n"
        "def test_own(storage, ns):\n"
        "    storage.queues.create(Queue(f'q{ns}'))\n"
        "    assert storage.queues.get(f'q{ns}').name == f'q{ns}'\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_own.py",
         "--storage-url", f"sqlite:///{tmp_path}/own.db"],
        capture_output=True, text=True, cwd=tmp_path, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
