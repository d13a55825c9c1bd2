"""FactStore: create once, get by (queue, uri, project); numbers read back exactly."""

from __future__ import annotations

import dataclasses
import math
import time

import pytest

from stovepipe.entity import Fact
from stovepipe.storage import AlreadyExists, NotFound, Storage
from stovepipe.storage.limits import MAX_CREATED_AT

# Floats that a decimal text of too few digits, a float32, or a DECIMAL column would change.
DEGREES = [
    0.0,
    1.0,
    0.1,
    1 / 3,
    2 / 3,
    0.30000000000000004,
    5e-324,  # the smallest subnormal
    2.2250738585072014e-308,  # the smallest normal
    math.nextafter(1.0, 0.0),
    math.nextafter(0.5, 1.0),
]
CREATED_ATS = [
    0.0,
    time.time(),
    1_700_000_000.123_456_7,
    0.1,
    1 / 3,
    5e-324,
    MAX_CREATED_AT,
    math.nextafter(MAX_CREATED_AT, 0.0),
]


def make_fact(ns: str, project: str = "", degree: float = 0.0) -> Fact:
    """A fact with every field set to a value of its own."""
    return Fact(
        queue=f"{ns}/main",
        uri=f"git://origin/{ns}/main/c1",
        project=project,
        degree=degree,
        request_id=f"request/{ns}/main/1",
        created_at=1_700_000_000.25,
    )


def _get(storage: Storage, fact: Fact) -> Fact:
    return storage.facts.get(fact.queue, fact.uri, fact.project)


def test_fact_create_then_get_returns_the_fact_with_every_field(storage: Storage, ns: str) -> None:
    fact = make_fact(ns, project="services/api", degree=1.0)
    storage.facts.create(fact)
    assert _get(storage, fact) == fact


def test_get_of_a_missing_fact_raises_not_found(storage: Storage, ns: str) -> None:
    with pytest.raises(NotFound):
        storage.facts.get(f"{ns}/main", "git://origin/never-validated", "")


def test_fact_create_of_an_existing_key_raises_already_exists_and_first_writer_wins(
    storage: Storage, ns: str
) -> None:
    first = make_fact(ns)
    second = dataclasses.replace(first, degree=1.0, request_id="request/other/2", created_at=2.5)
    storage.facts.create(first)
    with pytest.raises(AlreadyExists):
        storage.facts.create(second)
    assert _get(storage, first) == first


def test_facts_differing_in_any_one_part_of_the_key_are_stored_separately(
    storage: Storage, ns: str
) -> None:
    base = make_fact(ns)
    facts = [
        base,
        dataclasses.replace(base, project="lib", degree=1.0),
        dataclasses.replace(base, uri=f"{base.uri}2", degree=0.5),
        dataclasses.replace(base, queue=f"{base.queue}2", degree=0.25),
    ]
    for fact in facts:
        storage.facts.create(fact)
    assert [_get(storage, fact) for fact in facts] == facts
    with pytest.raises(NotFound):
        storage.facts.get(base.queue, base.uri, "other")


def _not_the_same(values: list[float], read: list[float]) -> list[str]:
    return [
        f"{value!r} read back as {back!r}"
        for value, back in zip(values, read, strict=True)
        if type(back) is not float or back.hex() != value.hex()
    ]


def test_fact_degree_reads_back_as_the_very_same_float(storage: Storage, ns: str) -> None:
    facts = [make_fact(ns, project=f"p{n}", degree=degree) for n, degree in enumerate(DEGREES)]
    for fact in facts:
        storage.facts.create(fact)
    assert not _not_the_same(DEGREES, [_get(storage, fact).degree for fact in facts])


def test_fact_created_at_reads_back_as_the_very_same_float(storage: Storage, ns: str) -> None:
    facts = [
        dataclasses.replace(make_fact(ns, project=f"p{n}"), created_at=created_at)
        for n, created_at in enumerate(CREATED_ATS)
    ]
    for fact in facts:
        storage.facts.create(fact)
    assert not _not_the_same(CREATED_ATS, [_get(storage, fact).created_at for fact in facts])


def test_fact_an_int_or_negative_zero_reads_back_as_the_float_it_equals(
    storage: Storage, ns: str
) -> None:
    # open_storage stores floats only: an int as the float it equals, -0.0 as 0.0.
    given: list[tuple[float, float]] = [(1, 1_700_000_000), (0, 0), (-0.0, -0.0)]
    for n, (degree, created_at) in enumerate(given):
        fact = dataclasses.replace(make_fact(ns, f"p{n}", degree), created_at=created_at)
        storage.facts.create(fact)
        stored = _get(storage, fact)
        assert not _not_the_same(
            [float(degree) + 0.0, float(created_at) + 0.0], [stored.degree, stored.created_at]
        )
