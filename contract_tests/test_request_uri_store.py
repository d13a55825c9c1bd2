"""RequestURIStore: the (queue, uri) -> id mapping behind ingest's dedup."""

from __future__ import annotations

import pytest

from stovepipe.storage import AlreadyExists, NotFound, Storage


def test_uri_create_then_get_id_by_uri_returns_the_id(storage: Storage, ns: str) -> None:
    storage.request_uris.create(f"{ns}/main", "git://o/r/main/abc", f"request/{ns}/1")
    assert storage.request_uris.get_id_by_uri(f"{ns}/main", "git://o/r/main/abc") == (
        f"request/{ns}/1"
    )


def test_get_id_by_uri_of_an_unmapped_uri_raises_not_found(storage: Storage, ns: str) -> None:
    with pytest.raises(NotFound):
        storage.request_uris.get_id_by_uri(f"{ns}/main", "git://o/r/main/missing")


def test_uri_claim_of_a_mapped_pair_raises_already_exists_and_first_mapping_wins(
    storage: Storage, ns: str
) -> None:
    storage.request_uris.create(f"{ns}/main", "git://x", f"request/{ns}/1")
    with pytest.raises(AlreadyExists):
        storage.request_uris.create(f"{ns}/main", "git://x", f"request/{ns}/2")
    assert storage.request_uris.get_id_by_uri(f"{ns}/main", "git://x") == f"request/{ns}/1"


def test_uri_claim_of_a_mapped_pair_by_the_same_id_again_raises_already_exists(
    storage: Storage, ns: str
) -> None:
    # Ingest's dedup rests on this: a second claim, even with the same id, is not a winner.
    storage.request_uris.create(f"{ns}/main", "git://x", f"request/{ns}/1")
    with pytest.raises(AlreadyExists):
        storage.request_uris.create(f"{ns}/main", "git://x", f"request/{ns}/1")
    assert storage.request_uris.get_id_by_uri(f"{ns}/main", "git://x") == f"request/{ns}/1"


def test_same_uri_in_two_queues_maps_independently(storage: Storage, ns: str) -> None:
    storage.request_uris.create(f"{ns}/a", "git://x", "id-a")
    storage.request_uris.create(f"{ns}/b", "git://x", "id-b")
    assert storage.request_uris.get_id_by_uri(f"{ns}/a", "git://x") == "id-a"
    assert storage.request_uris.get_id_by_uri(f"{ns}/b", "git://x") == "id-b"
