"""BuildRunner: builds a queue's commits and reports whether they are green.

>>> from stovepipe.buildrunner.fake import FakeBuildRunner
>>> runners = RunnerMap({"monorepo/main": FakeBuildRunner()})
>>> runner = runners.for_queue("monorepo/main")
>>> build_id = runner.trigger("request-1", None, "fake://monorepo/c1")
>>> runner.status(build_id).status
<BuildStatus.SUCCEEDED: 'succeeded'>
"""

from stovepipe.buildrunner.contract import (
    BuildReport,
    BuildRunner,
    BuildRunnerError,
    BuildRunnerFactory,
    NotFound,
    Unavailable,
)
from stovepipe.buildrunner.runnermap import RunnerMap

__all__ = [
    "BuildReport",
    "BuildRunner",
    "BuildRunnerError",
    "BuildRunnerFactory",
    "NotFound",
    "RunnerMap",
    "Unavailable",
]
