"""A small read-only JSON API over the demo data."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404

from project.reality.models import Agent, RealityNode, Team

MAX_LIMIT = 200


def _logged_in(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
    """The API answers logged-in users only, like most real ones (the smoke test logs in first)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"detail": "Authentication credentials were not provided."}, status=403)
        return view(request, *args, **kwargs)

    return wrapper


def _page(request: HttpRequest, queryset: QuerySet, fields: list[str]) -> JsonResponse:
    try:
        limit = min(max(int(request.GET.get("limit", 50)), 1), MAX_LIMIT)
        offset = max(int(request.GET.get("offset", 0)), 0)
    except ValueError:
        return JsonResponse({"error": "limit and offset must be whole numbers"}, status=400)
    if "team" in request.GET:
        try:
            queryset = queryset.filter(team_id=int(request.GET["team"]))
        except ValueError:
            return JsonResponse({"error": "team must be a team id"}, status=400)
    results = list(queryset.values(*fields)[offset : offset + limit])
    return JsonResponse({"count": queryset.count(), "limit": limit, "offset": offset, "results": results})


@_logged_in
def teams(request: HttpRequest) -> JsonResponse:
    return _page(request, Team.objects.all(), ["id", "name", "description", "settings", "created_at"])


@_logged_in
def agents(request: HttpRequest) -> JsonResponse:
    fields = ["id", "team_id", "name", "email", "role", "skills", "active", "joined_at"]
    return _page(request, Agent.objects.all(), fields)


@_logged_in
def nodes(request: HttpRequest) -> JsonResponse:
    fields = ["id", "team_id", "owner_id", "parent_id", "title", "attributes", "weight", "depth", "created_at"]
    return _page(request, RealityNode.objects.all(), fields)


@_logged_in
def node(request: HttpRequest, node_id: int) -> JsonResponse:
    found = get_object_or_404(RealityNode, pk=node_id)
    return JsonResponse(
        {
            "id": found.pk,
            "team_id": found.team_id,
            "owner_id": found.owner_id,
            "parent_id": found.parent_id,
            "title": found.title,
            "body": found.body,
            "attributes": found.attributes,
            "weight": found.weight,
            "depth": found.depth,
            "created_at": found.created_at,
            "children": list(found.children.values_list("id", flat=True)),
        }
    )
