"""The picture of a ``bookingcache bench compare`` run: each contender's staleness distribution
(the share of changes shown within a time, on a log scale of milliseconds) beside its Graph
requests per hour in the busy and the quiet window. Drawn with matplotlib (the ``bench``
extra), without a display."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    contenders: dict[str, Any] = result["contenders"]
    names = list(contenders)
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), width_ratios=(3, 2))
    for name in names:
        staleness = contenders[name]["staleness_ms"]
        if not staleness:
            continue
        shares = [(i + 1) / len(staleness) for i in range(len(staleness))]
        left.step(
            staleness, shares, where="post", label=name, linestyle="--" if "poll" in name else "-"
        )
    left.set_xscale("log")
    left.set_xlabel("staleness: change at Graph to shown by the contender (ms, log scale)")
    left.set_ylabel("share of changes shown")
    left.set_ylim(0, 1.02)
    left.grid(True, which="both", alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    width = 0.38
    positions = range(len(names))
    for offset, window in ((-width / 2, "busy"), (width / 2, "quiet")):
        right.bar(
            [p + offset for p in positions],
            [contenders[n][f"graph_requests_per_hour_{window}"] for n in names],
            width,
            label=f"{window} window",
        )
    right.set_xticks(list(positions))
    right.set_xticklabels(
        [n.replace("bookingcache-", "bc-") for n in names], rotation=25, ha="right", fontsize=8
    )
    right.set_ylabel("Graph requests per hour (extrapolated)")
    right.legend(fontsize=8)
    right.grid(True, axis="y", alpha=0.3)
    figure.suptitle(
        f"bench compare: {result['rooms']} rooms, {result['window_s']:.0f} s windows, "
        f"pollers every {result['poll_interval_s']:.0f} s"
    )
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
