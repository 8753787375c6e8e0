"""Sets of Prometheus metrics that a registry holds once, however many times the objects that
use them are built over it (an app's lifespan that runs again builds its engines again over
the app's one registry, and registering a metric name twice is an error)."""

from __future__ import annotations

import weakref
from typing import Any, ClassVar, Self

from prometheus_client import CollectorRegistry


class MetricSet:
    """A subclass registers its metrics in ``__init__(registry)``; ``of(registry)`` gives the
    registry's one instance."""

    _by_registry: ClassVar[weakref.WeakKeyDictionary[CollectorRegistry, Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._by_registry = weakref.WeakKeyDictionary()

    def __init__(self, registry: CollectorRegistry) -> None:
        del registry

    @classmethod
    def of(cls, registry: CollectorRegistry) -> Self:
        found: Self | None = cls._by_registry.get(registry)
        if found is None:
            found = cls._by_registry[registry] = cls(registry)
        return found
