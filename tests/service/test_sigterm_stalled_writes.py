"""SIGTERM while the pipeline's SQLite writes are stalled (another process holds the file's
write lock): every server exits on its own within a bound, never killed by a signal. Closing
connections that worker threads still used crashed such a server in 3 runs of 16."""

from __future__ import annotations

import pathlib
import signal
import sqlite3
import time

import grpc

from stovepipe.client import StovepipeClient
from stovepipe.testing import ServeProcesses
from stovepipe.v1 import stovepipe_pb2 as pb

RUNS = 20
AT_ONCE = 4
GRACE = 0.5
BOUND = 20.0  # seconds from SIGTERM to exit: the grace period, the drain, a loaded machine


def test_sigterm_during_stalled_sqlite_writes_exits_cleanly_every_run(
    processes: ServeProcesses, tmp_path: pathlib.Path
) -> None:
    statuses: list[int] = []
    stalled = 0  # servers whose workers were still inside a stalled call at the stop
    for round_ in range(RUNS // AT_ONCE):
        # A new file each round, so that each round's ingest gives the pipeline work.
        database = tmp_path / f"stovepipe-{round_}.db"
        config = tmp_path / f"stovepipe-{round_}.toml"
        # The messaging queue follows the storage: the same SQLite file, so claims stall too.
        config.write_text(
            f'storage_url = "sqlite:///{database}?timeout=30"\n'
            f"grace_period = {GRACE}\n"
            '[queues."q"]\ntype = "fake"\ncommits = ["c1"]\n'
            '[queues."q".build]\ntype = "fake"\noutcome = "succeeded"\nduration = 0.2\n',
            encoding="utf-8",
        )
        servers = processes.serve_many(AT_ONCE, ["--config", str(config)], cwd=tmp_path)
        for server in servers:
            with grpc.insecure_channel(server.address) as channel:
                StovepipeClient(channel).Ingest(pb.IngestRequest(queue="q"), timeout=30)
        holder = sqlite3.connect(database, isolation_level=None, timeout=30)
        try:
            holder.execute("BEGIN IMMEDIATE")  # the pipeline's next writes wait on it
            time.sleep(0.5)
            for server in servers:
                server.signal(signal.SIGTERM)
            deadline = time.monotonic() + BOUND
            for server in servers:
                left = max(0.1, deadline - time.monotonic())
                status = server.popen.wait(timeout=left)
                assert status >= 0, f"killed by signal {-status}:\n{server.output()}"
                statuses.append(status)
                stalled += "still using the messaging engine" in server.output()
        finally:
            holder.execute("ROLLBACK")
            holder.close()
    assert len(statuses) == RUNS
    assert stalled >= RUNS // 2, f"only {stalled} of {RUNS} runs stopped during a stalled write"
