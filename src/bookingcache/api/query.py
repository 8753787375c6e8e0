"""A query parameter that an operation takes once is refused when it is given more than once.

Starlette keeps every value of a repeated parameter and FastAPI binds the last one, so
``?before=x&before=5`` would quietly answer as ``?before=5``: the first value, however wrong,
would never be seen. Every operation of the API therefore refuses a repeat of any parameter it
does not declare as a list (``room`` of the stream, for example, may repeat).
"""

from __future__ import annotations

import types
import typing
from collections import Counter
from collections.abc import Iterator

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from bookingcache.api.problems import FieldError, ProblemError

_SEQUENCES = (list, tuple, set, frozenset)
# Kept on the route itself (routes are not hashable): worked out at its first request.
_ONCE = "_bookingcache_single_valued_query"


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


def single_valued(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` takes at most once."""
    known: frozenset[str] | None = vars(route).get(_ONCE)
    if known is None:
        fields = _query_fields(route.dependant)
        known = frozenset(name for name, annotation in fields if not _takes_many(annotation))
        setattr(route, _ONCE, known)
    return known


async def refuse_repeated_query(request: Request) -> None:
    """An app-wide dependency: 422 for a single-valued query parameter given more than once."""
    route = request.scope.get("route")
    query = request.query_params
    if not isinstance(route, APIRoute) or len(query) == len(query.multi_items()):
        return
    once = single_valued(route)
    counts = Counter(name for name, _ in query.multi_items())
    repeated = sorted(name for name, count in counts.items() if count > 1 and name in once)
    if repeated:
        raise ProblemError(
            422,
            "invalid-input",
            "a query parameter that takes one value was given more than once",
            field_errors=[
                FieldError(
                    field=f"query.{name[:64]}", message="given more than once", type="repeated"
                )
                for name in repeated[:10]
            ],
        )
