"""The picture of a ``bookingcache bench soak`` run: each process's resident memory with its
fitted line over the measured window, the queue as the workers saw it, and each interval's
freshness against the 1 s target. Drawn with matplotlib (the ``bench`` extra), without a
display."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples: list[dict[str, Any]] = result["samples"]
    minutes = [sample["t_s"] / 60 for sample in samples]
    warmup_min = result["warmup_s"] / 60
    figure, (memory, queue, fresh) = plt.subplots(3, 1, figsize=(11, 10), sharex=True)
    for name, slope in result["rss_slope_mb_per_min"].items():
        memory.plot(
            minutes, [s["rss_mb"][name] for s in samples], label=f"{name} ({slope:+.2f} MB/min)"
        )
    memory.set_ylabel("resident memory (MiB)")
    memory.legend(loc="upper left", fontsize=8, ncols=2)
    queue.plot(minutes, [s["queue_depth"] for s in samples], label="jobs queued")
    queue.axhline(result["rate_per_s"], color="grey", linestyle=":", label="bound: 1 s of changes")
    queue.set_ylabel("refresh jobs")
    oldest = queue.twinx()
    oldest.plot(
        minutes, [s["queue_oldest_due_s"] for s in samples], color="tab:red", label="oldest due (s)"
    )
    oldest.set_ylabel("oldest due job's wait (s)")
    queue.legend(loc="upper left", fontsize=8)
    oldest.legend(loc="upper right", fontsize=8)
    rows = [row for row in result["intervals"] if row["p99_ms"] is not None]
    ends = [row["t_s"] / 60 for row in rows]
    fresh.plot(ends, [row["p50_ms"] for row in rows], label="p50")
    fresh.plot(ends, [row["p99_ms"] for row in rows], label="p99")
    fresh.axhline(1000, color="grey", linestyle=":", label="target: p99 ≤ 1 s")
    fresh.set_ylabel("change to shown (ms)")
    fresh.set_xlabel("minutes since the load began")
    fresh.legend(loc="upper left", fontsize=8)
    for axis in (memory, queue, fresh):
        axis.axvspan(0, warmup_min, color="grey", alpha=0.12)
        axis.grid(True, alpha=0.3)
    figure.suptitle(
        f"bench soak: {result['rooms']} rooms, {result['rate_per_s']:g} changes/s, "
        f"{result['api_processes']} API processes and {result['workers']} workers on PostgreSQL "
        "(shaded: warm-up)",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
