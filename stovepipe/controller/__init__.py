"""Transport-agnostic business logic, one controller per stage: ingest admits heads; process,
build, buildsignal and record turn each admitted head into a verdict; the dead-letter
consumer fails closed."""

from stovepipe.controller.build import BuildController
from stovepipe.controller.buildsignal import BuildSignalController
from stovepipe.controller.deadletter import DeadLetterController
from stovepipe.controller.ingest import (
    Admission,
    InconsistentState,
    IngestController,
    InvalidQueue,
)
from stovepipe.controller.pipeline import subscribe_pipeline
from stovepipe.controller.process import ProcessController
from stovepipe.controller.record import RecordController

__all__ = [
    "Admission",
    "BuildController",
    "BuildSignalController",
    "DeadLetterController",
    "InconsistentState",
    "IngestController",
    "InvalidQueue",
    "ProcessController",
    "RecordController",
    "subscribe_pipeline",
]
