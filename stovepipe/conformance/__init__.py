"""Stovepipe's conformance suites, shipped for the authors of outside backends.

* ``stovepipe.conformance.storage``: the rules every storage backend obeys
  (``contract_tests/`` in the repository).
* ``stovepipe.conformance.messaging``: the rules every messaging queue obeys
  (``messaging_tests/`` in the repository).
* ``stovepipe.conformance.plugin``: the pytest plugin both suites run under (the
  ``--storage-url`` and ``--messaging-url`` options, which servers a run covers, and whether one
  it cannot reach is skipped or fails). Installed as a pytest entry point.

Install with ``pip install 'stovepipe[testing]'`` (it adds pytest, hypothesis and mirakuru), then::

    stovepipe conformance storage URL [PYTEST ARGUMENTS...]
    stovepipe conformance messaging URL [PYTEST ARGUMENTS...]

or ``pytest --pyargs stovepipe.conformance.storage --storage-url URL``.
"""

from __future__ import annotations

from collections.abc import Sequence

SUITES = {"storage": "--storage-url", "messaging": "--messaging-url"}


def pytest_arguments(suite: str, url: str, extra: Sequence[str] = ()) -> list[str]:
    """The pytest command line that runs ``suite`` ("storage" or "messaging") against ``url``.

    Any directory will do: the suite is found by its package name, and the configuration
    files of the current directory are not read (``-c`` names an empty one).

    Raises:
        KeyError: ``suite`` is not one of :data:`SUITES`.
    """
    import importlib
    import os

    option = SUITES[suite]
    # The suite's own directory: node ids read relative to it, wherever the run starts.
    directory = importlib.import_module(f"{__name__}.{suite}").__path__[0]
    return [
        "--pyargs",
        f"{__name__}.{suite}",
        f"{option}={url}",
        "-c",
        os.devnull,
        "--rootdir",
        directory,
        "-p",
        "no:cacheprovider",
        "--import-mode=importlib",
        "-ra",
        "--strict-markers",
        *extra,
    ]


def run(suite: str, url: str, extra: Sequence[str] = ()) -> int:
    """Run ``suite`` against ``url`` with pytest, in a child Python; pytest's exit status.

    0 only when every test that applies to the backend passed (tests of what the backend does
    not claim to be are skipped); 1 when any failed; 5 when none ran. A child, because pytest
    must import the suite and its plugin itself to rewrite their assertions.

    Raises:
        ImportError: pytest or hypothesis is not installed (``stovepipe[testing]``).
    """
    import importlib.util
    import subprocess
    import sys

    for module in ("pytest", "hypothesis"):
        if importlib.util.find_spec(module) is None:
            raise ImportError(f"No module named {module!r}")
    command = [sys.executable, "-m", "pytest", *pytest_arguments(suite, url, extra)]
    return subprocess.call(command)
