"""Rules that apply only to backends of a kind: selected by what the backend declares."""

from __future__ import annotations

import pytest

from stovepipe.storage import Capability, Storage


def require(storage: Storage, capability: Capability) -> None:
    """Skip the calling test unless the backend under test declares ``capability``."""
    if capability not in storage.capabilities:
        pytest.skip(f"the backend does not declare the capability {capability.value!r}")
