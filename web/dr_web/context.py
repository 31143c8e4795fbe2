"""What every request handler needs, kept on the Flask app: config, live telemetry, the peers, health."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from flask import current_app

from dr_common.rejects import RejectCounter

from dr_web.config import WebConfig
from dr_web.livestate import LiveState
from dr_web.upstream import Upstream

EXTENSION = "dr_web"


@dataclass
class WebContext:
    config: WebConfig
    live: LiveState
    upstream: Upstream
    health: Callable[[], dict[str, Any]]
    dropped: RejectCounter


def ctx() -> WebContext:
    """The running app's context."""
    return current_app.extensions[EXTENSION]
