"""A health endpoint for load balancers, smoke tests and humans: is the database answering?"""

from __future__ import annotations

import time
from collections.abc import Callable

from django.db import DatabaseError, connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from seeddump.conf import conf


@never_cache
@require_GET
def health(request: HttpRequest) -> HttpResponse:
    started = time.monotonic()
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return JsonResponse({"status": "error", "database": reason}, status=503)
    return JsonResponse({"status": "ok", "database": "ok", "ms": round((time.monotonic() - started) * 1000, 1)})


class SmokeHealthMiddleware:
    """Answers the smoke test's health path before any of the project's middleware or URLs see it.

    Only installed by ``seeddump.smoke_settings``, the settings of the server ``smoketest`` starts."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.path: str = conf.SMOKE_HEALTH_PATH

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path == self.path:
            return health(request)
        return self.get_response(request)
