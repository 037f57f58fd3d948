"""How long a sweep trial takes to start: tunescout's forkserver with preloaded imports vs spawn.

A study has hundreds of short trials, each in its own process (so a crash fails one trial).
The cost we care about is the time from "launch a trial" to "the trial's code runs with torch,
transformers and tunescout's training code imported". tunescout forks trials from a server
that imported them once (``LocalExecutor``); the peer is a fresh interpreter per trial
(multiprocessing's ``spawn``), which is what a process pool without preloading pays.

    .venv/bin/python benchmarks/trial_startup.py [--trials 5]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time


def _ready(conn, launched_at: float) -> None:
    """The trial body: import what a trial imports, then report how long the start took."""
    import tunescout.study.worker  # noqa: F401  (already imported in a preloaded server)

    conn.send(time.perf_counter() - launched_at)
    conn.close()


def _measure(ctx: mp.context.BaseContext, trials: int) -> list[float]:
    times = []
    for _ in range(trials):
        parent, child = ctx.Pipe()
        launched = time.perf_counter()
        process = ctx.Process(target=_ready, args=(child, launched))
        process.start()
        child.close()
        times.append(parent.recv())
        process.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()

    forkserver = mp.get_context("forkserver")
    forkserver.set_forkserver_preload(["tunescout.study.worker"])
    warm_start = time.perf_counter()
    _measure(forkserver, 1)  # starts the server itself: paid once per sweep
    server_s = time.perf_counter() - warm_start
    preloaded = _measure(forkserver, args.trials)
    spawned = _measure(mp.get_context("spawn"), args.trials)

    med_pre, med_spawn = statistics.median(preloaded), statistics.median(spawned)
    print(f"trials measured: {args.trials} each (median seconds from launch to ready)")
    print(f"{'start method':<34}{'median s':>10}{'max s':>10}")
    print(f"{'tunescout (forkserver, preloaded)':<34}{med_pre:>10.3f}{max(preloaded):>10.3f}")
    print(f"{'spawn (fresh interpreter)':<34}{med_spawn:>10.3f}{max(spawned):>10.3f}")
    print(f"forkserver start-up, once per sweep: {server_s:.2f} s")
    print(f"ratio: spawn / tunescout = {med_spawn / med_pre:.1f}x slower to start a trial")


if __name__ == "__main__":
    main()
