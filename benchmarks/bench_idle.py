"""Requests an idle ``stovepipe serve`` sends its engine, per second, counted by the engine.

    python -m benchmarks.bench_idle [--engines mysql,redis,etcd] [--seconds 10]

Each engine is a private server of this run's (``mariadbd``, ``redis-server``, ``etcd``);
see :mod:`stovepipe.idle_testing` for what is counted. Two windows: idle after start-up, and
idle after a burst of new heads went through the whole pipeline. Figures are printed; the
rule (at most 5 a second) is asserted by ``tests/service/test_idle_engine_requests.py``.
"""

from __future__ import annotations

import argparse

from stovepipe.idle_testing import IDLE_REQUESTS_PER_SECOND_LIMIT, measure_idle


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--engines", default="mysql,redis,etcd", help="comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each window")
    args = parser.parse_args()
    print(
        "Requests per second to the engine while idle (rule: <= "
        f"{IDLE_REQUESTS_PER_SECOND_LIMIT:g})"
    )
    print(f"{'engine':<8}{'after start':>13}{'after work':>12}{'in work':>10}{'in scripts':>12}")
    for engine in (name for name in args.engines.split(",") if name):
        figures = measure_idle(engine, args.seconds)
        scripted = max(figures.scripted_after_start, figures.scripted_after_work)
        print(
            f"{engine:<8}{figures.after_start:>13.1f}{figures.after_work:>12.1f}"
            f"{figures.during_work:>10.0f}{scripted:>12.0f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
