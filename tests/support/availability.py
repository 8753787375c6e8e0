"""The availability tests' day, events and tenant: a Monday in Berlin, basic events by local
clock time, and a tenant whose cache the test fills as a refresh would."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent, EventType, Sensitivity, ShowAs
from bookingcache.store.port import Store

from .auth import ADMIN

# Monday 23 November 2026, 09:00 UTC = 10:00 in Berlin (UTC+1 in winter).
NOW = dt.datetime(2026, 11, 23, 9, 0, tzinfo=dt.UTC)
UTC = dt.UTC


def at(text: str) -> dt.datetime:
    """``"09:30"`` on the test day, or a full ISO 8601 instant, as aware UTC."""
    if len(text) == 5:
        hours, minutes = text.split(":")
        return NOW.replace(hour=int(hours), minute=int(minutes))
    return dt.datetime.fromisoformat(text).astimezone(UTC)


def z(instant: dt.datetime) -> str:
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event(
    event_id: str,
    start: str,
    end: str,
    *,
    show_as: ShowAs = ShowAs.BUSY,
    title: str | None = "Planning",
    sensitivity: Sensitivity = Sensitivity.NORMAL,
    all_day: bool = False,
    cancelled: bool = False,
    type: EventType = EventType.SINGLE_INSTANCE,
) -> BasicEvent:
    return BasicEvent(
        id=event_id,
        start=at(start),
        end=at(end),
        is_all_day=all_day,
        show_as=show_as,
        is_cancelled=cancelled,
        title=title,
        sensitivity=sensitivity,
        type=type,
    )


@dataclass
class Tenant:
    id: str
    read_token: str
    client: httpx.AsyncClient
    store: Store
    clock: FixedClock

    @property
    def reader(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.read_token}"}

    @property
    def base(self) -> str:
        return f"/v1/tenants/{self.id}"

    async def put_room(
        self,
        room_id: str,
        mailbox: str,
        *,
        name: str | None = None,
        building: str | None = "HQ",
        floor: str | None = "1",
        time_zone: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"mailbox": mailbox, "name": name or room_id.upper()}
        if building is not None:
            body["building"] = building
        if floor is not None:
            body["floor"] = floor
        if time_zone is not None:
            body["time_zone"] = time_zone
        response = await self.client.put(f"{self.base}/rooms/{room_id}", json=body, headers=ADMIN)
        assert response.status_code in (200, 201), response.text

    async def sync(
        self, mailbox: str, events: Sequence[BasicEvent], *, synced_at: dt.datetime | None = None
    ) -> None:
        """Replace the mailbox's cached events for the test week, as a refresh would."""
        await self.store.replace_window(
            self.id,
            mailbox,
            window_start=NOW - dt.timedelta(days=3),
            window_end=NOW + dt.timedelta(days=10),
            events=events,
            synced_at=synced_at or self.clock.now(),
        )

    async def get(self, path: str, **params: Any) -> httpx.Response:
        return await self.client.get(f"{self.base}{path}", params=params, headers=self.reader)

    async def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        return await self.client.post(
            f"{self.base}{path}", json=body, headers={**self.reader, **headers}
        )
