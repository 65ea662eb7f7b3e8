"""Writes each demo team's emblem: a small generated PNG, saved through the default storage."""

from __future__ import annotations

import random
import struct
import zlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from project.emblems.models import Emblem
from project.reality.models import Team

FOLDER = "emblems"
SIZE = 32


def png(rng: random.Random) -> bytes:
    """A 32x32 two-colour PNG in a random pattern, written by hand (no imaging library needed)."""
    colours = [bytes(rng.randrange(256) for _ in range(3)) for _ in range(2)]
    pattern = [[rng.random() < 0.5 for _ in range(SIZE // 4)] for _ in range(SIZE // 4)]
    rows = b"".join(b"\x00" + b"".join(colours[pattern[y // 4][x // 4]] for x in range(SIZE)) for y in range(SIZE))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def clear() -> None:
    """Removes the emblems an earlier seed wrote, so that a seed's files are exactly its rows' files."""
    if not default_storage.exists(FOLDER):
        return
    _, files = default_storage.listdir(FOLDER)
    for name in files:
        default_storage.delete(f"{FOLDER}/{name}")


def seed_emblem(team: Team, rng: random.Random, using: str) -> Emblem:
    emblem = Emblem(team=team)
    emblem.image.save(f"team-{team.pk:04d}.png", ContentFile(png(rng)), save=False)
    emblem.save(using=using)
    return emblem
