"""The query parameters of the JSON API's operations are the ones they document, each once.

- **Unknown parameters are refused** on ``/v1/`` (422, naming them): a misspelt filter
  (``rooms:free?capcity=8``, ``map/rooms?bulding=HQ``) must not quietly answer as no filter.
  The pages, Graph's webhooks and the connector's signed relay calls are left alone.
- **A repeat of a single-valued parameter is refused** everywhere. Starlette keeps every value
  and FastAPI binds the last one, so ``?before=x&before=5`` would answer as ``?before=5``: the
  first value, however wrong, would never be seen. Parameters declared as lists (the stream's
  ``room``) may repeat.
"""

from __future__ import annotations

import types
import typing
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from bookingcache.api.problems import FieldError, ProblemError

_SEQUENCES = (list, tuple, set, frozenset)
# Kept on the route itself (routes are not hashable): worked out at its first request.
_KNOWN = "_bookingcache_query_parameters"
_API_PREFIX = "/v1/"
# The connector's relay calls are signed over their whole target, query included: the signature
# check answers a query that was not signed (401), before anything reads the call.
_SIGNED = frozenset({"/v1/tenants/{tenant}/notifications"})
_MAX_NAMED = 10


@dataclass(frozen=True, slots=True)
class QueryParameters:
    """What an operation takes in its query."""

    names: frozenset[str]
    single_valued: frozenset[str]
    # Whether a parameter it does not take is refused (the JSON API) or ignored (pages).
    closed: bool


def _takes_many(annotation: object) -> bool:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _takes_many(typing.get_args(annotation)[0])
    if origin is typing.Union or origin is types.UnionType:
        return any(_takes_many(arg) for arg in typing.get_args(annotation))
    return origin in _SEQUENCES or annotation in _SEQUENCES


def _query_fields(dependant: Dependant) -> Iterator[tuple[str, object]]:
    for param in dependant.query_params:
        yield param.alias, param.field_info.annotation
    for inner in dependant.dependencies:
        yield from _query_fields(inner)


def query_parameters(route: APIRoute) -> QueryParameters:
    """The query parameters ``route`` takes."""
    known: QueryParameters | None = vars(route).get(_KNOWN)
    if known is None:
        fields = list(_query_fields(route.dependant))
        known = QueryParameters(
            names=frozenset(name for name, _ in fields),
            single_valued=frozenset(name for name, kind in fields if not _takes_many(kind)),
            closed=route.path.startswith(_API_PREFIX) and route.path not in _SIGNED,
        )
        setattr(route, _KNOWN, known)
    return known


def single_valued(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` takes at most once."""
    return query_parameters(route).single_valued


def _refuse(detail: str, names: list[str], message: str, kind: str) -> ProblemError:
    return ProblemError(
        422,
        "invalid-input",
        detail,
        field_errors=[
            FieldError(field=f"query.{name[:64]}", message=message, type=kind)
            for name in names[:_MAX_NAMED]
        ],
    )


async def check_query(request: Request) -> None:
    """An app-wide dependency: 422 for a parameter the operation does not take (on the JSON
    API) and for a single-valued parameter given more than once."""
    route = request.scope.get("route")
    if not isinstance(route, APIRoute) or not request.scope.get("query_string"):
        return
    known = query_parameters(route)
    items = request.query_params.multi_items()
    if known.closed:
        unknown = sorted({name for name, _ in items} - known.names)
        if unknown:
            taken = ", ".join(sorted(known.names)) or "none"
            raise _refuse(
                f"unknown query parameters; this operation takes: {taken}",
                unknown,
                "unknown",
                "extra_forbidden",
            )
    counts = Counter(name for name, _ in items)
    repeated = sorted(n for n, c in counts.items() if c > 1 and n in known.single_valued)
    if repeated:
        raise _refuse(
            "a query parameter that takes one value was given more than once",
            repeated,
            "given more than once",
            "repeated",
        )
