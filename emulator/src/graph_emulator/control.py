"""Placeholder until this part lands; install() is called by app.create_app."""

from __future__ import annotations

from typing import Any

from graph_emulator.extension import Extension


def install(state: Any) -> Extension:
    return Extension()
