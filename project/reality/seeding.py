"""The demo's seed script: deterministic, through the ORM, one object at a time.

It is slow on purpose, the way real seed scripts are (row by row, each in its own transaction,
with lookups between inserts): that slowness is what seeddump's dumps replace.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from django.db import connections

from project.emblems import seeding as emblems
from project.reality.models import Agent, RealityNode, Team

WORDS = (
    "amber anchor beacon birch cinder cobalt delta drift ember fable fern flux garnet glade harbor haze "
    "ion ivory jade juniper kelp kestrel lumen lyric meadow mirth nebula nimbus onyx orbit pebble prism "
    "quartz quill raven ripple sable shard thistle tide umber vale velvet willow wisp xenon yarrow zephyr"
).split()
SKILLS = ["mapping", "welding", "cartography", "lore", "signals", "botany", "repair", "diplomacy"]
BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Plan:
    teams: int
    agents_per_team: int
    nodes_per_team: int

    @property
    def rows(self) -> int:
        return self.teams * (2 + self.agents_per_team + self.nodes_per_team)  # a team, its emblem, ...

    @property
    def files(self) -> int:
        return self.teams  # each team's emblem, under MEDIA_ROOT


def plan_for(scale: int) -> Plan:
    """Each unit of scale is about 3,000 rows; the default (10) takes about a minute on 2 cores."""
    return Plan(teams=2 * scale, agents_per_team=12, nodes_per_team=1500)


def _sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def seed(environment: str, scale: int, progress: Callable[[str], None], using: str = "default") -> Plan:
    plan = plan_for(scale)
    rng = random.Random(f"seeddump-demo:{environment}:{scale}")  # a str seed is stable across runs
    connection = connections[using]
    with connection.cursor() as cursor:
        # Identities restart so that every run produces the same primary keys.
        cursor.execute("TRUNCATE emblems_emblem, reality_node, reality_agent, reality_team RESTART IDENTITY CASCADE")
    emblems.clear()

    for team_number in range(plan.teams):
        team = Team.objects.using(using).create(
            name=f"{environment}-team-{team_number:04d} {rng.choice(WORDS)}",
            description=" ".join(_sentence(rng, 12) for _ in range(3)),
            settings={"region": rng.choice(["north", "south", "east", "west"]), "tier": rng.randint(1, 5)},
            created_at=BASE_TIME + timedelta(days=team_number),
        )
        emblems.seed_emblem(team, rng, using)
        agents = []
        for agent_number in range(plan.agents_per_team):
            agents.append(
                Agent.objects.using(using).create(
                    team=team,
                    name=f"{rng.choice(WORDS).title()} {rng.choice(WORDS).title()}",
                    email=f"agent{team_number:04d}-{agent_number:03d}@{environment}.example.com",
                    role=rng.choice(list(Agent.Role)),
                    skills=rng.sample(SKILLS, rng.randint(1, 4)),
                    bio=_sentence(rng, 25),
                    active=rng.random() > 0.1,
                    joined_at=BASE_TIME + timedelta(days=team_number, minutes=agent_number),
                )
            )
        nodes: list[RealityNode] = []
        for node_number in range(plan.nodes_per_team):
            parent = rng.choice(nodes) if nodes and rng.random() < 0.8 else None
            if parent is not None:
                # Real seed scripts look things up as they go; this one re-reads the parent.
                parent = RealityNode.objects.using(using).get(pk=parent.pk)
            nodes.append(
                RealityNode.objects.using(using).create(
                    team=team,
                    owner=rng.choice(agents) if rng.random() < 0.9 else None,
                    parent=parent,
                    title=f"{rng.choice(WORDS)} {rng.choice(WORDS)} {node_number}",
                    body=" ".join(_sentence(rng, 14) for _ in range(rng.randint(2, 8))),
                    attributes={
                        "color": rng.choice(WORDS),
                        "stable": rng.random() > 0.3,
                        "tags": rng.sample(WORDS, 3),
                    },
                    weight=round(rng.uniform(0, 100), 3),
                    depth=0 if parent is None else min(parent.depth + 1, 32000),
                    rank=rng.randint(0, 1000),
                    created_at=BASE_TIME + timedelta(days=team_number, seconds=node_number),
                )
            )
        progress(f"team {team_number + 1}/{plan.teams}")
    return plan
