"""seeds/scripts/init-db.sh, run for real against a throwaway PostgreSQL cluster, as the postgres image runs it."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from django.conf import settings

from project import embedded
from seeddump import dumpfiles
from tests.conftest import REPO, MediaDump, copy_dump
from tests.test_refusals import _flip_byte

# The seeded dump comes from the session's databases; these tests do not touch them otherwise.
pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

SCRIPT = REPO / "seeds" / "scripts" / "init-db.sh"
COMPOSE = REPO / "docker-compose.dev.yml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL 18 cluster of its own, like the image's temporary server: a local socket only."""
    server = embedded.get_server(tmp_path_factory.mktemp("initdb") / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    yield {"PGHOST": str(info.socket_dir), "PGPORT": str(info.port or 5432)}
    server.cleanup()


@pytest.fixture
def image_env(cluster: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """The environment the image gives its init scripts, with POSTGRES_DB created as the image does."""
    database = f"app_{request.node.name.split('[')[0][-20:]}".lower()
    with psycopg.connect(**_conn(cluster, "postgres"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}"')
        conn.execute(f'CREATE DATABASE "{database}"')
    bin_dir = str(settings.SEEDDUMP_PG_BIN_DIRS[0])
    return {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "POSTGRES_USER": "postgres",
        "POSTGRES_DB": database,
        "SEEDDUMP_DUMPS_DIR": str(tmp_path / "dumps"),
        **cluster,
    }


def _conn(cluster: dict[str, str], dbname: str) -> dict[str, str]:
    return {"host": cluster["PGHOST"], "port": cluster["PGPORT"], "user": "postgres", "dbname": dbname}


def table_count(env: dict[str, str], table: str) -> int | None:
    with psycopg.connect(**_conn(env, env["POSTGRES_DB"])) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return None
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]  # type: ignore[index]


def run_script(env: dict[str, str], command: list[str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command or ["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def dev_dump(seeded_dumps: dict[str, Path], image_env: dict[str, str]) -> Path:
    return copy_dump(seeded_dumps["default"], Path(image_env["SEEDDUMP_DUMPS_DIR"]))


@pytest.mark.parametrize("version", ["committed", "dirty"])
def test_restores_the_latest_dump(image_env: dict[str, str], dev_dump: Path, version: str) -> None:
    if version == "dirty":  # made from uncommitted migrations: v<commit>-dirty-<hex> (seeddump.versions)
        dirty = dev_dump.with_name(re.sub(r"-seeded-v([0-9a-f]+)-", r"-seeded-v\1-dirty-0123abcd-", dev_dump.name))
        dev_dump.rename(dirty)
        dumpfiles.metadata_path(dev_dump).rename(dumpfiles.metadata_path(dirty))
        dumpfiles.point_latest(dirty, "dev")
        dev_dump = dirty
    result = run_script(image_env)

    assert result.returncode == 0, result.stderr
    assert f"restoring {dev_dump.name} beside '{image_env['POSTGRES_DB']}'" in result.stdout
    assert result.stderr == ""
    assert re.search(rf"restored {re.escape(dev_dump.name)} into '.*' in \d+s", result.stdout)
    assert table_count(image_env, "reality_node") == 3000
    assert table_count(image_env, "reality_team") == 2


def test_a_dump_with_media_restores_its_database_and_says_the_files_are_not_restored(
    image_env: dict[str, str], media_dumps: dict[str, MediaDump]
) -> None:
    """The metadata of a dump with media holds a second checksum and size (the archive's): the script must
    check the dump's own, and leave the files (which belong in the app's MEDIA_ROOT) alone."""
    dump = copy_dump(media_dumps["default"].path, Path(image_env["SEEDDUMP_DUMPS_DIR"]))

    result = run_script(image_env)

    assert result.returncode == 0, result.stderr
    assert table_count(image_env, "emblems_emblem") == 2
    archive = dump.name.removesuffix(".dump") + ".media.tar.gz"
    assert f"the dump also has media files ({archive}): this script restores the database only" in result.stdout
    assert "run python manage.py restoredump dev where the app runs" in result.stdout


def test_bad_checksum_stops_initialisation(image_env: dict[str, str], dev_dump: Path) -> None:
    _flip_byte(dev_dump)

    result = run_script(image_env)

    assert result.returncode == 1
    assert "ERROR: checksum mismatch for " + dev_dump.name in result.stderr
    assert "regenerate it" in result.stderr
    assert table_count(image_env, "reality_node") is None


def databases_on(env: dict[str, str]) -> set[str]:
    with psycopg.connect(**_conn(env, "postgres")) as conn:
        return {name for (name,) in conn.execute("SELECT datname FROM pg_database").fetchall()}


def _rewrite_metadata(dump: Path, **changes: object) -> None:
    path = dump.with_name(dump.name.removesuffix(".dump") + ".metadata.json")
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_a_cut_off_dump_whose_metadata_matches_it_leaves_the_database_empty(
    image_env: dict[str, str], dev_dump: Path
) -> None:
    """The archive loses its last table's data, and its checksum and size are made to match: only the row
    counts can tell, and the database the image then serves must not be a half one."""
    listing = subprocess.run(
        ["pg_restore", "--list", str(dev_dump)], env=image_env, capture_output=True, text=True, check=True
    ).stdout
    keep = "\n".join(line for line in listing.splitlines() if "TABLE DATA public reality_node" not in line)
    list_file = dev_dump.with_name("list.txt")
    list_file.write_text(keep)
    archive = dev_dump.with_name("cut.dump")
    # The same archive without reality_node's rows: pg_dump's own format, smaller.
    with psycopg.connect(**_conn(image_env, "postgres"), autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS cut_source")
        conn.execute("CREATE DATABASE cut_source")
    subprocess.run(
        ["pg_restore", "--use-list", str(list_file), "--dbname", "cut_source", str(dev_dump)],
        env={**image_env, "PGUSER": "postgres"},
        check=True,
    )
    subprocess.run(
        ["pg_dump", "--format=custom", "--file", str(archive), "cut_source"],
        env={**image_env, "PGUSER": "postgres"},
        check=True,
    )
    archive.replace(dev_dump)
    _rewrite_metadata(
        dev_dump,
        sizeBytes=dev_dump.stat().st_size,
        checksum="sha256:" + hashlib.sha256(dev_dump.read_bytes()).hexdigest(),
    )

    result = run_script(image_env)

    assert result.returncode == 1
    assert "reality_node has 0 rows, the metadata says 3000" in result.stderr
    assert f"'{image_env['POSTGRES_DB']}' was left empty" in result.stderr
    assert table_count(image_env, "reality_team") is None
    assert not {name for name in databases_on(image_env) if "seeddump" in name}


def test_metadata_of_another_environment_or_size_is_refused(image_env: dict[str, str], dev_dump: Path) -> None:
    _rewrite_metadata(dev_dump, environment="staging")
    result = run_script(image_env)
    assert result.returncode == 1
    assert "says environment 'staging', not 'dev'" in result.stderr

    _rewrite_metadata(dev_dump, environment="dev", sizeBytes=12)
    result = run_script(image_env)
    assert result.returncode == 1
    assert "its metadata says '12': it is truncated or was changed" in result.stderr
    assert table_count(image_env, "reality_team") is None


def test_no_dump_starts_empty_and_says_how_to_make_one(image_env: dict[str, str]) -> None:
    result = run_script(image_env)

    assert result.returncode == 0, result.stderr
    assert "no dev dump in " in result.stdout and "starts empty" in result.stdout
    assert "python manage.py generatedump dev" in result.stdout
    assert table_count(image_env, "reality_node") is None


@pytest.mark.parametrize("protected", ["prod,production", "Prod, Production", " production ,prod"])
def test_protected_environment_is_refused(image_env: dict[str, str], dev_dump: Path, protected: str) -> None:
    shutil.copy(dev_dump, dev_dump.with_name("production-seeded-latest.dump"))
    result = run_script({**image_env, "SEEDDUMP_ENV": "production", "SEEDDUMP_PROTECTED_ENVIRONMENTS": protected})

    assert result.returncode == 1
    assert "refusing to restore the protected environment 'production'" in result.stderr
    assert table_count(image_env, "reality_node") is None


def test_link_outside_the_dumps_folder_is_refused(image_env: dict[str, str], dev_dump: Path, tmp_path: Path) -> None:
    link = dev_dump.with_name("dev-seeded-latest.dump")
    link.unlink()
    link.symlink_to(tmp_path / "elsewhere.dump")

    result = run_script(image_env)

    assert result.returncode == 1
    assert "points outside the dumps folder" in result.stderr


def test_sourced_by_the_entrypoint(image_env: dict[str, str], dev_dump: Path) -> None:
    """The image sources scripts that are not executable: success must not end the entrypoint."""
    sourced = ["bash", "-c", f'set -e; source "{SCRIPT}"; echo "entrypoint goes on"']
    result = run_script(image_env, sourced)
    assert result.returncode == 0, result.stderr
    assert "entrypoint goes on" in result.stdout

    _flip_byte(dev_dump)
    result = run_script(image_env, sourced)
    assert result.returncode == 1
    assert "entrypoint goes on" not in result.stdout


def test_compose_mounts_match_the_script() -> None:
    compose = COMPOSE.read_text()
    script = SCRIPT.read_text()

    init_mount = re.search(r"- \./seeds/scripts/init-db\.sh:(\S+?):ro", compose)
    dumps_mount = re.search(r"- \./seeds/dumps:(\S+?):ro", compose)
    assert init_mount and dumps_mount
    assert init_mount.group(1) == "/docker-entrypoint-initdb.d/01-init-db.sh"
    default_dumps = re.search(r'SEEDDUMP_DUMPS_DIR:-([^}"]+)', script)
    assert default_dumps and default_dumps.group(1) == dumps_mount.group(1)
    assert (REPO / "seeds" / "dumps").is_dir() and SCRIPT.stat().st_mode & 0o111
    image = re.search(r"image: postgres:(\d+)", compose)
    assert image and int(image.group(1)) >= 18  # at least the pg_dump of the demo's embedded server
