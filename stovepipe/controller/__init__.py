"""Transport-agnostic business logic: ingest admits heads, process consumes admitted requests."""

from stovepipe.controller.ingest import InconsistentState, IngestController, InvalidQueue
from stovepipe.controller.process import ProcessController

__all__ = ["InconsistentState", "IngestController", "InvalidQueue", "ProcessController"]
