"""What a tenant's title policy withholds is never kept: generated events, written through both
of the service's write paths (the worker's refresh from an event source, and a relay's pushed
window through intake), and then every place the service keeps or lets out data is searched for
the withheld subjects: every text of every table in the database, the log, the metrics and the
answers of the read endpoints."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from bookingcache.api.deps import services_of
from bookingcache.bootstrap import service_app
from bookingcache.clock import FixedClock
from bookingcache.domain.events import BasicEvent, Sensitivity
from bookingcache.domain.tenancy import EventSource, TitlePolicy
from bookingcache.settings import OrchestrationSettings, Settings, SyncSettings
from bookingcache.store.sql.schema import metadata
from bookingcache.sync.metrics import SyncMetrics
from bookingcache.sync.sources.push import PushSource
from bookingcache.sync.worker import SourceSet, Worker
from tests.support.auth import ADMIN
from tests.support.databases import SECRETS_KEY
from tests.support.relay import wire_event
from tests.support.signing import sign
from tests.support.tenants import Org, add_org

from .fakes import MemorySource

PRIVATE = {Sensitivity.PRIVATE, Sensitivity.CONFIDENTIAL}
PATHS = ("worker", "push")


@dataclass(repr=False)
class Deployment:
    app: FastAPI
    client: httpx.AsyncClient
    worker: Worker
    source: MemorySource
    metrics: CollectorRegistry
    orgs: dict[tuple[str, TitlePolicy], Org]
    log: list[str] = field(default_factory=list)
    withheld: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)
    rounds: Iterator[int] = field(default_factory=itertools.count)


class _Lines(logging.Handler):
    def __init__(self, lines: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@pytest.fixture
async def deployment(
    tmp_path: object, database_url: str, admin_token: str, clock: FixedClock
) -> AsyncIterator[Deployment]:
    """The service's app (no worker of its own, no orchestration), a worker on its store and
    queue reading from an in-memory source, and a tenant per title policy and write path."""
    app = service_app(
        Settings(
            data_dir=getattr(tmp_path, "joinpath")("data"),  # noqa: B009 (a Path)
            database_url=database_url,
            admin_token=SecretStr(admin_token),
            secrets_key=SecretStr(SECRETS_KEY),
            database_wait_s=0,
            run_worker=False,
            orchestration=OrchestrationSettings(enabled=False),
        ),
        clock=clock,
    )
    lines: list[str] = []
    handler = _Lines(lines)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        async with app.router.lifespan_context(app):
            services = services_of(app)
            source = MemorySource(clock)
            registry = CollectorRegistry()
            worker = Worker(
                store=services.store,
                queue=services.queue,
                sources=SourceSet(connector=source, graph=source, push=PushSource()),
                settings=SyncSettings(),
                clock=clock,
                rng=random.Random(3),
                metrics=SyncMetrics(registry),
            )
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                orgs: dict[tuple[str, TitlePolicy], Org] = {}
                for path, policy in itertools.product(PATHS, TitlePolicy):
                    kind = EventSource.PUSH if path == "push" else EventSource.CONNECTOR
                    org = await add_org(services.store, rooms=1, source=kind)
                    changed = await client.patch(
                        f"/v1/tenants/{org.id}", json={"title_policy": policy.value}, headers=ADMIN
                    )
                    assert changed.status_code == 200, changed.text
                    orgs[(path, policy)] = org
                yield Deployment(app, client, worker, source, registry, orgs, lines)
                await worker.stop(grace_s=0)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def withheld(policy: TitlePolicy, sensitivity: Sensitivity) -> bool:
    return policy is TitlePolicy.HIDE or (
        policy is TitlePolicy.HIDE_PRIVATE and sensitivity in PRIVATE
    )


async def write(
    deployment: Deployment, path: str, org: Org, events: list[BasicEvent], clock: FixedClock
) -> None:
    mailbox = org.mailboxes[0]
    if path == "worker":
        deployment.source.calendars[mailbox] = {event.id: event for event in events}
        await services_of(deployment.app).queue.enqueue({(org.id, mailbox): clock.now()})
        await deployment.worker.step()
        await deployment.worker.settle()
        return
    midnight = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    body = json.dumps(
        {
            "changes": [],
            "lifecycle": [],
            "resync": [],
            "windows": [
                {
                    "mailbox": mailbox,
                    "start": midnight.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "end": (midnight + dt.timedelta(days=14)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "events": [
                        wire_event(
                            event.id,
                            event.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            event.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                            subject=event.title,
                            sensitivity=event.sensitivity.value,
                        )
                        for event in events
                    ],
                }
            ],
        }
    ).encode()
    target = f"/v1/tenants/{org.id}/notifications"
    headers = sign(org.secret, "POST", target, body, at=clock.now())
    headers["Content-Type"] = "application/json"
    answer = await deployment.client.post(target, content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    assert answer.json()["windowsApplied"] == 1


async def database_text(deployment: Deployment) -> str:
    """Every value of every row of every table, as text."""
    store = services_of(deployment.app).store
    parts: list[str] = []
    async with store.read() as connection:  # type: ignore[attr-defined]
        for table in metadata.sorted_tables:
            for row in await connection.execute(sa.select(table)):
                parts.extend(str(value) for value in row)
    return "\n".join(parts)


async def answers_text(deployment: Deployment, clock: FixedClock) -> str:
    start = clock.now().replace(hour=0, minute=0, second=0, microsecond=0)
    window = {
        "start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "end": (start + dt.timedelta(days=7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    texts: list[str] = []
    for org in deployment.orgs.values():
        events = await deployment.client.get(
            f"/v1/tenants/{org.id}/rooms/r0/events", params=window, headers=ADMIN
        )
        assert events.status_code == 200, events.text
        schedule = await deployment.client.post(
            f"/v1/tenants/{org.id}/getSchedule",
            json={
                "schedules": [org.mailboxes[0]],
                "startTime": {"dateTime": window["start"][:-1], "timeZone": "UTC"},
                "endTime": {"dateTime": window["end"][:-1], "timeZone": "UTC"},
            },
            headers=ADMIN,
        )
        assert schedule.status_code == 200, schedule.text
        availability = await deployment.client.get(
            f"/v1/tenants/{org.id}/rooms/r0/availability", params=window, headers=ADMIN
        )
        assert availability.status_code == 200, availability.text
        texts += [events.text, schedule.text, availability.text]
    return "\n".join(texts)


subjects = st.text(
    alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs"]), min_size=1, max_size=24
)
drafts = st.lists(
    st.tuples(subjects, st.sampled_from(list(Sensitivity)), st.integers(0, 6 * 24 - 1)),
    min_size=1,
    max_size=4,
)


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(drafts=drafts, path=st.sampled_from(PATHS), policy=st.sampled_from(list(TitlePolicy)))
async def test_no_withheld_subject_is_kept_anywhere(
    deployment: Deployment,
    clock: FixedClock,
    drafts: list[tuple[str, Sensitivity, int]],
    path: str,
    policy: TitlePolicy,
) -> None:
    number = next(deployment.rounds)
    start = clock.now().replace(minute=0, second=0, microsecond=0)
    events: list[BasicEvent] = []
    for index, (text, sensitivity, hour) in enumerate(drafts):
        subject = f"{text} {uuid.uuid4().hex}"
        at = start + dt.timedelta(hours=hour)
        events.append(
            BasicEvent(
                id=f"ev-{number}-{index}",
                start=at,
                end=at + dt.timedelta(minutes=30),
                title=subject,
                sensitivity=sensitivity,
            )
        )
        if withheld(policy, sensitivity):
            deployment.withheld.add(subject)
        else:
            deployment.kept.add(subject)
    await write(deployment, path, deployment.orgs[(path, policy)], events, clock)

    stored = await database_text(deployment)
    answers = await answers_text(deployment, clock)
    metrics = (
        generate_latest(services_of(deployment.app).metrics).decode()
        + generate_latest(deployment.metrics).decode()
    )
    metrics += (await deployment.client.get("/metrics")).text
    log = "\n".join(deployment.log)
    places = {"the database": stored, "an answer": answers, "the metrics": metrics, "the log": log}
    # Each subject ends in a mark no other data can hold by chance.
    found = [
        f"{subject!r} in {where}"
        for subject in deployment.withheld
        for where, text in places.items()
        if subject.rsplit(" ", 1)[1] in text
    ]
    assert found == [], "withheld subjects kept"
    # The search looks where things are: the log holds the refreshes and the pushed calls, and
    # the titles a policy lets through are stored.
    assert any("refreshed" in line for line in deployment.log) or path == "push"
    assert any("/notifications" in line for line in deployment.log) or path == "worker"
    missing = [e.title for e in events if e.title in deployment.kept and e.title not in stored]
    assert missing == []


async def test_a_tightened_policy_reaches_the_cache_by_the_offered_resync(
    deployment: Deployment, clock: FixedClock
) -> None:
    """Titles stored under ``show`` stay until a refresh; the policy change offers a resync,
    and the resync it offers leaves none behind."""
    org = deployment.orgs[("worker", TitlePolicy.SHOW)]
    mailbox = org.mailboxes[0]
    at = clock.now() + dt.timedelta(hours=1)
    secret = f"Kari Nordmann {uuid.uuid4().hex}"
    event = BasicEvent(id="ev", start=at, end=at + dt.timedelta(minutes=30), title=secret)
    await write(deployment, "worker", org, [event], clock)
    assert secret in await database_text(deployment)

    changed = await deployment.client.patch(
        f"/v1/tenants/{org.id}", json={"title_policy": "hide"}, headers=ADMIN
    )
    assert changed.status_code == 200, changed.text
    assert (changed.json()["title_policy"], changed.json()["resync_available"]) == ("hide", True)
    # Reading applies the new policy at once; what is stored waits for the next refresh.
    answers = await answers_text(deployment, clock)
    assert secret not in answers
    assert "Busy" in answers
    assert secret in await database_text(deployment)

    resync = await deployment.client.post(f"/v1/tenants/{org.id}/calendars:resync", headers=ADMIN)
    assert resync.status_code == 202, resync.text
    assert resync.json() == {"tenant": org.id, "calendars": 1}
    await deployment.worker.step()
    await deployment.worker.settle()
    assert deployment.source.forgotten == [mailbox]
    stored = await database_text(deployment)
    assert secret not in stored
    assert "ev" in stored  # the event itself is still cached, without its title
