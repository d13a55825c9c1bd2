"""SourceControl: resolves a queue's commits to opaque URIs.

>>> from stovepipe.sourcecontrol.fake import FakeSourceControl
>>> sources = QueueMap({"monorepo/main": FakeSourceControl(["c2", "c1"], name="monorepo")})
>>> sources.for_queue("monorepo/main").latest()
'fake://monorepo/c2'
"""

from stovepipe.sourcecontrol.contract import (
    MAX_PAGE_LIMIT,
    NotFound,
    Page,
    Refused,
    SourceControl,
    SourceControlError,
    SourceControlFactory,
    Unavailable,
)
from stovepipe.sourcecontrol.queuemap import QueueMap

__all__ = [
    "MAX_PAGE_LIMIT",
    "NotFound",
    "Page",
    "QueueMap",
    "Refused",
    "SourceControl",
    "SourceControlError",
    "SourceControlFactory",
    "Unavailable",
]
