"""The picture of a ``bookingcache bench onboard`` run: rooms subscribed and fresh, as the
operator's progress API showed them, against the floor that Graph's subscription-write limit
puts under the subscriptions and the 15-minute target. Drawn with matplotlib (the ``bench``
extra), without a display."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Graph's subscription API: 500 writes per 20 s per app and tenant.
WRITES_PER_S = 500 / 20


def plot(result: dict[str, Any], path: Path, *, fresh_within_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rooms: int = result["rooms"]
    seconds = [at for at, _, _ in result["progress"]]
    figure, axis = plt.subplots(figsize=(10, 5))
    axis.plot(seconds, [subscribed for _, subscribed, _ in result["progress"]], label="subscribed")
    axis.plot(seconds, [fresh for _, _, fresh in result["progress"]], label="fresh")
    floor_s = rooms / WRITES_PER_S
    axis.plot(
        [0, floor_s],
        [0, rooms],
        color="grey",
        linestyle="--",
        label="Graph's limit: 500 subscriptions per 20 s",
    )
    axis.axvline(fresh_within_s, color="tab:red", linestyle=":", label="target: all fresh")
    axis.set_xlabel("seconds since the import")
    axis.set_ylabel("rooms")
    axis.set_ylim(0, rooms * 1.05)
    axis.grid(True, alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title(
        f"bench onboard: {rooms:,} rooms linked at once; all subscribed at "
        f"{result['all_subscribed_s']} s, all fresh at {result['all_fresh_s']} s, "
        f"{result['throttled']} throttled",
        fontsize=10,
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
