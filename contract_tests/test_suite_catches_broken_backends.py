"""The suite can fail: each deliberately broken backend makes the rule it breaks fail.

Each broken backend is registered through a throwaway distribution's entry point, exactly as
an outside backend would be, and the suite runs against it in a child pytest.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import pytest

SUITE = pathlib.Path(__file__).parent

BROKEN = {
    "update-ignores-version": (
        "open_update_ignores_version",
        [
            "test_update_with_a_stale_version_raises_version_mismatch_and_changes_nothing",
            "test_race_concurrent_updates_from_one_version_have_exactly_one_winner",
            "test_model_random_operation_sequences_match_the_memory_model",
        ],
    ),
    "lowercases-keys": (
        "open_lowercases_keys",
        [
            "test_keys_are_exact_for_request_ids",
            "test_keys_are_exact_for_queue_and_uri_pairs",
            "test_keys_are_exact_for_counter_domains",
        ],
    ),
    "create-overwrites": (
        "open_create_overwrites",
        [
            "test_create_of_an_existing_id_raises_already_exists_and_first_writer_wins",
            "test_race_concurrent_creates_of_one_id_have_exactly_one_winner",
        ],
    ),
}


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Run the suite against every broken backend at once; the failed test names of each."""
    site = tmp_path_factory.mktemp("site")
    dist_info = site / "stovepipe_broken_backends-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stovepipe-broken-backends\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[stovepipe.storage]\n"
        + "".join(
            f"{name} = contract_tests.broken:{opener}\n" for name, (opener, _) in BROKEN.items()
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    runs = {}
    for name in BROKEN:
        report = site / f"{name}.xml"
        command = [
            sys.executable, "-m", "pytest", str(SUITE), f"--storage-url={name}://",
            "-p", "no:cacheprovider", "--hypothesis-profile=no-shrink",
            "-q", "--no-header", f"--junitxml={report}",
            f"--ignore={SUITE / pathlib.Path(__file__).name}",
        ]  # fmt: skip
        runs[name] = (subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True), report)
    failed: dict[str, set[str]] = {}
    for name, (process, report) in runs.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 1, f"{name}: exit {process.returncode}\n{output}"
        failed[name] = {
            case.attrib["name"].split("[")[0]
            for case in ElementTree.parse(report).iter("testcase")
            if case.find("failure") is not None or case.find("error") is not None
        }
    return failed


@pytest.mark.parametrize("broken", BROKEN)
def test_suite_catches_each_broken_backend(failures: dict[str, set[str]], broken: str) -> None:
    _, must_fail = BROKEN[broken]
    missed = [test for test in must_fail if test not in failures[broken]]
    assert not missed, f"{broken}: the suite passed {missed}"
