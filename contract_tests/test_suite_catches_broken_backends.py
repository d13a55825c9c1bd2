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
from collections.abc import Iterator

import pytest

from .broken import line_echo_server

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
            "test_keys_are_exact_for_queue_names",
            "test_keys_are_exact_for_build_ids",
            "test_keys_are_exact_for_fact_keys",
        ],
    ),
    "create-overwrites": (
        "open_create_overwrites",
        [
            "test_create_of_an_existing_id_raises_already_exists_and_first_writer_wins",
            "test_race_concurrent_creates_of_one_id_have_exactly_one_winner",
            "test_queue_create_of_an_existing_name_raises_already_exists_and_first_writer_wins",
            "test_build_create_of_an_existing_id_raises_already_exists_and_first_writer_wins",
            "test_fact_create_of_an_existing_key_raises_already_exists_and_first_writer_wins",
            "test_race_concurrent_creates_of_one_queue_have_exactly_one_winner",
            "test_race_concurrent_creates_of_one_build_have_exactly_one_winner",
            "test_race_concurrent_creates_of_one_fact_have_exactly_one_winner",
        ],
    ),
    "queue-update-ignores-version": (
        "open_queue_update_ignores_version",
        [
            "test_queue_update_with_a_stale_version_raises_version_mismatch_and_changes_nothing",
            "test_queue_update_never_reads_queue_version",
            "test_race_queue_slot_counter_of_compare_and_set_loops_ends_exactly_at_the_racer_count",
            "test_model_random_operation_sequences_match_the_memory_model",
        ],
    ),
    "build-update-stores-every-field": (
        "open_build_update_stores_every_field",
        ["test_build_update_never_changes_id_or_request_id"],
    ),
    "fact-key-joined-with-slash": (
        "open_fact_key_joined_with_slash",
        ["test_keys_are_exact_separators_never_make_two_fact_keys_collide"],
    ),
    "fact-floats-as-short-text": (
        "open_fact_floats_as_short_text",
        [
            "test_fact_degree_reads_back_as_the_very_same_float",
            "test_fact_created_at_reads_back_as_the_very_same_float",
        ],
    ),
    "create-identical-succeeds": (
        "open_create_identical_succeeds",
        [
            "test_create_of_an_identical_request_again_raises_already_exists",
            "test_uri_claim_of_a_mapped_pair_by_the_same_id_again_raises_already_exists",
        ],
    ),
    "uri-key-joined-with-a-control-character": (
        "open_uri_key_joined_with_a_control_character",
        ["test_keys_are_exact_no_join_character_and_no_unescaped_escape_makes_pairs_collide"],
    ),
    "uri-key-escape-forgets-the-escape": (
        "open_uri_key_escape_forgets_the_escape",
        ["test_keys_are_exact_no_join_character_and_no_unescaped_escape_makes_pairs_collide"],
    ),
    "uri-key-cut-to-a-prefix": (
        "open_uri_key_cut_to_a_prefix",
        ["test_keys_are_exact_for_long_uris_that_share_all_but_their_last_character"],
    ),
    "unlocked-counter": (
        "open_unlocked_counter",
        ["test_race_concurrent_counter_increments_never_repeat_or_skip"],
    ),
    "update-checks-without-lock": (
        "open_update_checks_without_lock",
        ["test_race_updates_interleaved_line_by_line_never_lose_an_update"],
    ),
    "timeout-bounds-only-connect": (
        "open_timeout_bounds_only_connect",
        ["test_unavailable_promptly_when_the_server_goes_silent_mid_session"],
    ),
    "statement-errors-leak": (
        "open_statement_errors_leak",
        [
            "test_unavailable_when_the_server_resets_connections_mid_session",
            "test_unavailable_promptly_when_the_server_goes_silent_mid_session",
        ],
    ),
}

OVER_THE_NETWORK = {"timeout-bounds-only-connect", "statement-errors-leak"}
"""Broken backends that talk to a server: the run gives them a line echo server's address."""

RULE_NAMED = {
    "update-checks-without-lock": "compares the version and writes in one atomic step",
    "timeout-bounds-only-connect": "must bound every call on an open session",
    "statement-errors-leak": "driver exceptions are mapped on every statement",
}
"""What the failure message says, for the broken backends whose rule it must name."""


@pytest.fixture(scope="module")
def failures(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, dict[str, str]]]:
    """Run the suite against every broken backend at once: of each, its failed tests' names
    and their failure messages."""
    with line_echo_server() as port:
        yield _run_all(tmp_path_factory.mktemp("site"), port)


def _run_all(site: pathlib.Path, echo_port: int) -> dict[str, dict[str, str]]:
    dist_info = site / "stovepipe_broken_backends-0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: stovepipe-broken-backends\nVersion: 0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[stovepipe.storage]\n"
        + "".join(
            f"{name} = stovepipe.conformance.storage.broken:{opener}\n"
            for name, (opener, _) in BROKEN.items()
        )
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
    }
    runs = {}
    for name, (_, must_fail) in BROKEN.items():
        report = site / f"{name}.xml"
        # Only the tests that must fail run: seven whole suites at once would take long.
        url = f"{name}://127.0.0.1:{echo_port}" if name in OVER_THE_NETWORK else f"{name}://"
        command = [
            sys.executable, "-m", "pytest", str(SUITE), f"--storage-url={url}",
            "-p", "no:cacheprovider", "--hypothesis-profile=no-shrink",
            "-q", "--no-header", f"--junitxml={report}", "-k", " or ".join(must_fail),
            f"--ignore={SUITE / pathlib.Path(__file__).name}",
        ]  # fmt: skip
        runs[name] = (subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True), report)
    failed: dict[str, dict[str, str]] = {}
    for name, (process, report) in runs.items():
        output, _ = process.communicate(timeout=600)
        assert process.returncode == 1, f"{name}: exit {process.returncode}\n{output}"
        failed[name] = {}
        for case in ElementTree.parse(report).iter("testcase"):
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is not None:
                message = problem.attrib.get("message", "") + (problem.text or "")
                failed[name][case.attrib["name"].split("[")[0]] = message
    return failed


@pytest.mark.parametrize("broken", BROKEN)
def test_suite_catches_each_broken_backend(
    failures: dict[str, dict[str, str]], broken: str
) -> None:
    _, must_fail = BROKEN[broken]
    missed = [test for test in must_fail if test not in failures[broken]]
    assert not missed, f"{broken}: the suite passed {missed}"
    if broken in RULE_NAMED:
        for test in must_fail:
            assert RULE_NAMED[broken] in failures[broken][test], failures[broken][test]
