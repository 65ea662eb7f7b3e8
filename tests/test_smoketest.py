"""smoketest runs the real stack: a restore, migrations, a web server over HTTP, pages, data."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections

from seeddump import databases, postgres, smoke
from tests.conftest import MediaDump, copy_dump, database_names, files_of, manage, run_command
from tests.test_refusals import _flip_byte

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")


@pytest.fixture
def seeded_dump(alias: str, media_dumps: dict[str, MediaDump], dumps_dir: Path) -> Path:
    """Here the seeded dump has its media (the demo's emblems): the smoke test checks FileField values on disk."""
    return copy_dump(media_dumps[alias].path, dumps_dir)


def smoketest(alias: str, dumps_dir: Path, *args: str, env: dict[str, str] | None = None):
    log = dumps_dir.parent / "smoke.log"
    return manage("smoketest", "--log-file", str(log), *args, alias=alias, dumps_dir=dumps_dir, env=env), log


def _teams(alias: str) -> list[str]:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT name FROM reality_team ORDER BY id")
        return [name for (name,) in cursor.fetchall()]


def test_healthy_stack_passes_in_a_database_of_its_own(
    alias: str, restored: Path, dumps_dir: Path, media_root: Path
) -> None:
    # The developer's own work in the configured database and media folder: the smoke test must not touch it.
    with connections[alias].cursor() as cursor:
        cursor.execute("UPDATE reality_team SET name = 'my local work' WHERE id = 1")
    before = _teams(alias)
    (media_root / "emblems" / "team-0001.png").write_bytes(b"my own emblem")
    files_before = files_of(media_root)

    result, log = smoketest(alias, dumps_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    lines = [
        "PASS  environment: latest dump and metadata",
        "PASS  database: restore latest dump",
        "PASS  database: row counts match the dump's metadata",
        "PASS  database: migrations applied",
        "PASS  database: files of FileFields exist",
        "PASS  backend: web server answers /__seeddump__/healthz/",
        "PASS  backend: create a smoke-test user",
        "PASS  backend: log in as a smoke-test user",
        "PASS  backend: GET /api/teams/",  # the demo's API answers logged-in users only
        "PASS  backend: GET /api/nodes/",
        "PASS  frontend: GET /admin/login/",
        "PASS  frontend: GET /admin/ (logged in)",
        "PASS  frontend: GET /admin/seeddump/dumprecord/ (logged in)",
        "PASS  cleanup: drop seeddump_smoke_",
        "PASS  cleanup: remove ",
    ]
    positions = [out.find(line) for line in lines]
    assert -1 not in positions, [line for line, at in zip(lines, positions, strict=True) if at == -1]
    # Row counts are compared right after the restore, before the smoke-test user or a login writes anything.
    assert positions == sorted(positions)
    assert "Smoke test passed: " in out and " 0 failed" in out
    assert "beside 'test_seeddump_" in out and "which is not touched" in out
    assert "[PASS] backend: GET /api/agents/" in log.read_text()
    # The configured database is exactly as it was (no restore, no smoke-test user); the smoke database is gone.
    assert _teams(alias) == before and "my local work" in before
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM auth_user WHERE username LIKE 'seeddump-smoke-%%'")
        assert cursor.fetchone() == (0,)
    target = connections[alias].settings_dict["NAME"]
    assert smoke.smoke_database_name(target) not in database_names(alias)
    # The dump's files were checked in a folder of the smoke test's own, now removed; MEDIA_ROOT is as it was.
    assert "sampled file(s) of emblems.Emblem.image exist in " + str(dumps_dir / "smoke-media-") in out
    assert files_of(media_root) == files_before
    assert not list(dumps_dir.glob("smoke-media-*"))


@pytest.mark.parametrize("alias", ["default"])
def test_files_missing_for_file_fields_fail_with_the_fix(
    alias: str, seeded_dumps: dict[str, Path], dumps_dir: Path, media_root: Path
) -> None:
    """A dump made without --media, whose FileField values name files this machine does not have: the
    broken links a restored environment would show."""
    copy_dump(seeded_dumps[alias], dumps_dir)

    result, _ = smoketest(alias, dumps_dir, "--skip-frontend")

    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "files of FileFields exist" in line)
    assert line.startswith("  FAIL  database: files of FileFields exist")
    assert "2 of 2 sampled file(s) are missing from " + str(media_root) in line
    assert "emblems/team-0001.png (emblems.Emblem.image)" in line
    assert "make it with generatedump --media" in line


@pytest.mark.parametrize("alias", ["default"])
def test_overwrite_restores_over_the_configured_database(alias: str, restored: Path, dumps_dir: Path) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("UPDATE reality_team SET name = 'my local work' WHERE id = 1")

    result, _ = smoketest(alias, dumps_dir, "--overwrite", "--skip-frontend")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "my local work" not in _teams(alias)
    assert "cleanup:" not in result.stdout


@pytest.mark.parametrize("alias", ["default"])
def test_keep_database_keeps_it_for_a_look(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    name = smoke.smoke_database_name(connections[alias].settings_dict["NAME"])
    try:
        result, _ = smoketest(alias, dumps_dir, "--keep-database", "--skip-frontend")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"PASS  cleanup: keep {name}" in result.stdout
        assert name in database_names(alias)
    finally:
        with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
            databases.drop(admin, name)


@pytest.mark.parametrize("alias", ["default"])
def test_the_log_goes_to_the_dumps_folder_by_default(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result = manage("smoketest", "--skip-frontend", alias=alias, dumps_dir=dumps_dir)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Log: {dumps_dir / 'smoketest.log'}" in result.stdout
    assert "[PASS] cleanup: drop" in (dumps_dir / "smoketest.log").read_text()


@pytest.mark.parametrize("alias", ["default"])
def test_secure_cookies_still_log_in_over_plain_http(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    # A project made for HTTPS (taiga, most production-like settings): Secure cookies never come back over http.
    env = {"SESSION_COOKIE_SECURE": "true", "CSRF_COOKIE_SECURE": "true"}

    result, _ = smoketest(alias, dumps_dir, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  backend: log in as a smoke-test user" in result.stdout


@pytest.mark.parametrize("alias", ["default"])
def test_failures_say_the_status_and_a_reason_never_the_page(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    env = {"SEEDDUMP_SMOKE_PAGES": "/no-such-page/", "SEEDDUMP_SMOKE_API_URLS": "/api/teams/,/admin/"}

    result, _ = smoketest(alias, dumps_dir, env=env)

    assert result.returncode == 1
    assert "FAIL  frontend: GET /no-such-page/ (" in result.stdout
    assert "/no-such-page/ answered 404 (Page not found at /no-such-page/), expected 200." in result.stdout
    assert "/admin/ did not return JSON (text/html" in result.stdout
    assert "<" not in result.stdout + result.stderr  # no HTML anywhere
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("CommandError: Smoke test failed: 2 check(s) failed")


@pytest.mark.parametrize("alias", ["default"])
def test_api_checks_run_as_the_logged_in_smoke_user(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    # No pages to check at all: the smoke-test user still logs in, for the API (behind login in the demo).
    env = {"SEEDDUMP_SMOKE_LOGIN_PAGES": "", "SEEDDUMP_SMOKE_PAGES": "", "SEEDDUMP_SMOKE_API_URLS": "/api/teams/"}

    result, _ = smoketest(alias, dumps_dir, env=env)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  backend: log in as a smoke-test user" in result.stdout
    assert "PASS  backend: GET /api/teams/ (" in result.stdout


@pytest.mark.parametrize("alias", ["default"])
def test_the_projects_own_health_url_is_used_when_named(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result, _ = smoketest(alias, dumps_dir, "--skip-frontend", env={"SEEDDUMP_SMOKE_HEALTH_URL": "/healthz/"})

    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  backend: web server answers /healthz/" in result.stdout


def _response(status: int, content_type: str, body: str) -> smoke._HttpResponse:
    return smoke._HttpResponse(status, content_type, body.encode(), "http://127.0.0.1/x/")


def test_reasons_are_a_few_words_from_the_answer() -> None:
    assert smoke.reason(_response(403, "application/json", '{"detail": "Not logged in."}')) == "Not logged in."
    csrf_page = (
        "<html><head><title>403 Forbidden</title></head><body><h1>Forbidden</h1>"
        "<p>CSRF verification failed. Request aborted.</p><pre>CSRF cookie not set.</pre></body></html>"
    )
    assert smoke.reason(_response(403, "text/html", csrf_page)) == "CSRF verification failed: CSRF cookie not set."
    long_page = "<html><body>" + "<p>word</p>" * 500 + "</body></html>"
    assert len(smoke.reason(_response(502, "text/html", long_page))) <= 120
    assert smoke.reason(_response(503, "text/plain", "")) == "Service Unavailable"


@pytest.mark.parametrize("alias", ["default"])
def test_a_health_url_the_project_does_not_serve_says_what_to_add(
    alias: str, seeded_dump: Path, dumps_dir: Path
) -> None:
    result, _ = smoketest(alias, dumps_dir, env={"SEEDDUMP_SMOKE_HEALTH_URL": "/status/"})

    assert result.returncode == 1
    assert (
        "/status/ answered 404 (Page not found at /status/). "
        'Add path("", include("seeddump.urls")) to your URLs, or unset SEEDDUMP_SMOKE_HEALTH_URL.'
    ) in result.stderr


@pytest.mark.parametrize("alias", ["default"])
def test_ignored_tables_are_not_compared(alias: str, restored: Path, dumps_dir: Path) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM reality_node WHERE parent_id IS NOT NULL AND id > 2900")
    env = {"SEEDDUMP_SMOKE_IGNORE_TABLES": "reality_node"}

    result, _ = smoketest(alias, dumps_dir, "--skip-dump-restore", "--skip-frontend", env=env)

    assert result.returncode == 0, result.stdout + result.stderr


def test_json_report(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result, _ = smoketest(alias, dumps_dir, "--json", "--skip-frontend")

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["passed"] is True and report["environment"] == "dev"
    assert report["counts"]["fail"] == 0
    statuses = {(c["phase"], c["name"]): c["status"] for c in report["checks"]}
    assert statuses[("backend", "GET /api/nodes/")] == "pass"
    assert statuses[("frontend", "pages")] == "skip"
    assert statuses[("database", "row counts match the dump's metadata")] == "pass"


def test_corrupt_dump_fails_and_skips_what_depends_on_it(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    _flip_byte(seeded_dump)

    result, _ = smoketest(alias, dumps_dir)

    assert result.returncode == 1
    assert "FAIL  database: restore latest dump" in result.stdout
    assert "SKIP  database: migrations applied" in result.stdout
    assert "SKIP  backend: web server answers /__seeddump__/healthz/" in result.stdout
    assert "SKIP  backend: GET /api/teams/" in result.stdout
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1
    assert errors[0].startswith("CommandError: Smoke test failed: ")
    assert "The checksum of " in errors[0]


@pytest.fixture
def restored(alias: str, seeded_dump: Path) -> Path:
    run_command("restoredump", "dev", database=alias, interactive=False)
    return seeded_dump


@pytest.fixture
def broken_nodes_api(alias: str, restored: Path) -> Iterator[None]:
    with connections[alias].cursor() as cursor:
        cursor.execute("ALTER TABLE reality_node RENAME COLUMN title TO title_broken")
    yield
    connections[alias].close()
    with connections[alias].cursor() as cursor:
        cursor.execute("ALTER TABLE reality_node RENAME COLUMN title_broken TO title")


@pytest.mark.parametrize("alias", ["default"])
def test_api_error_fails(alias: str, dumps_dir: Path, broken_nodes_api: None) -> None:
    result, log = smoketest(alias, dumps_dir, "--skip-dump-restore")

    assert result.returncode == 1
    assert "PASS  backend: GET /api/teams/" in result.stdout
    assert "FAIL  backend: GET /api/nodes/ " in result.stdout
    assert "/api/nodes/ answered 500 (ProgrammingError at /api/nodes/), expected 200 as the logged-in" in result.stderr
    assert "title" in log.read_text()  # the server's own error is in the log


@pytest.mark.parametrize("alias", ["default"])
def test_data_not_matching_the_metadata_fails(alias: str, dumps_dir: Path, restored: Path) -> None:
    with connections[alias].cursor() as cursor:
        cursor.execute("DELETE FROM reality_node WHERE parent_id IS NOT NULL AND id > 2900")

    result, _ = smoketest(alias, dumps_dir, "--skip-dump-restore", "--skip-frontend")

    assert result.returncode == 1
    assert "FAIL  database: row counts match the dump's metadata" in result.stdout
    assert "reality_node: " in result.stderr and "rows, the dump has 3000" in result.stderr


@pytest.mark.parametrize("alias", ["default"])
def test_protected_environment_fails_first(alias: str, seeded_dump: Path, dumps_dir: Path) -> None:
    result, _ = smoketest(alias, dumps_dir, "--env", "prod")

    assert result.returncode == 1
    assert "FAIL  environment: environment name" in result.stdout
    assert "SKIP  database: server accepts connections" in result.stdout
    assert "protected environment 'prod'" in result.stderr


@pytest.mark.parametrize("alias", ["default"])
def test_missing_dump_is_a_note_with_skip_dump_restore(alias: str, dumps_dir: Path, restored: Path) -> None:
    shutil.rmtree(dumps_dir)  # seeded data in the database, but no dump anywhere

    result, _ = smoketest(alias, dumps_dir, "--skip-dump-restore", "--skip-frontend")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "NOTE  environment: dumps folder" in result.stdout

    result, _ = smoketest(alias, dumps_dir, "--skip-frontend")
    assert result.returncode == 1
    assert "FAIL  environment: dumps folder" in result.stdout


# --- A project without the admin (NetBox, pretix): its own root URL and login page -----------------------

NO_ADMIN_SETTINGS = """
SECRET_KEY = "smoke-without-admin"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions", "seeddump"]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
]
ROOT_URLCONF = "urls"
TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "DIRS": [TEMPLATES_DIR]}]
USE_TZ = True
"""

# The dashboard behind a login, as NetBox's: anonymous visitors are sent to the login page.
URLS_WITH_LOGIN = """
from django.contrib.auth import views
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.urls import path


@login_required
def dashboard(request):
    return HttpResponse(f"<html><body>Dashboard of {request.user.get_username()}</body></html>")


login = views.LoginView.as_view(template_name="login.html")
urlpatterns = [path("", dashboard), path("sign-in/", login, name="sign-in")]
"""

URLS_WITHOUT_LOGIN = """
from django.http import HttpResponse
from django.urls import path

urlpatterns = [path("", lambda request: HttpResponse("<html><body>Welcome</body></html>"))]
"""

URLS_WITHOUT_PAGES = """
from django.http import JsonResponse
from django.urls import path

urlpatterns = [path("api/", lambda request: JsonResponse({"results": []}))]
"""


def smoketest_without_admin(alias: str, tmp_path: Path, urls: str, settings: str = ""):
    """``smoketest`` in a small project that has no django.contrib.admin, against the alias's test database as it
    is (--skip-dump-restore: the pages are what is checked here)."""
    from tests.test_settings_sources import bin_dirs, project, run

    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "login.html").write_text(
        '<html><body><form method="post">{% csrf_token %}{{ form }}<input type="submit"></form></body></html>'
    )
    text = f"TEMPLATES_DIR = {str(templates)!r}\n" + NO_ADMIN_SETTINGS + settings
    folder = project(tmp_path, alias, text, **{"urls.py": urls})  # our INSTALLED_APPS replace project()'s
    env = {"SEEDDUMP_DIR": str(tmp_path / "dumps"), "SEEDDUMP_PG_BIN_DIRS": bin_dirs()}
    return run(folder, "smoketest", "--skip-dump-restore", **env)


def _line(out: str, start: str) -> str:
    """The check's line, without its time: ``STATUS  phase: name — detail``."""
    line = next((line.strip() for line in out.splitlines() if line.strip().startswith(start)), "")
    return re.sub(r" \(\d+\.\d\ds\)", "", line)


def _summary_counts(out: str) -> dict[str, int]:
    summary = next(line for line in out.splitlines() if "Smoke test " in line)
    return {word: int(re.search(rf"(\d+) {word}", summary)[1]) for word in ("passed", "failed", "skipped")}  # type: ignore[index]


@pytest.mark.parametrize("alias", ["default"])
def test_without_the_admin_the_root_url_and_login_url_are_checked(alias: str, tmp_path: Path) -> None:
    result = smoketest_without_admin(alias, tmp_path, URLS_WITH_LOGIN, 'LOGIN_URL = "sign-in"\n')  # a URL name

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "PASS  frontend: GET / (" in out and "after a redirect to /sign-in/?next=/" in out
    assert "PASS  frontend: GET /sign-in/ (" in out
    assert "PASS  backend: create a smoke-test user" in out
    assert "PASS  backend: log in as a smoke-test user" in out and "logged in as seeddump-smoke-" in out
    assert "PASS  frontend: GET / (logged in)" in out
    assert "Smoke test passed: " in out and " 0 failed" in out


@pytest.mark.parametrize("alias", ["default"])
def test_without_the_admin_or_a_login_page_the_login_is_skipped_and_counted(alias: str, tmp_path: Path) -> None:
    # LOGIN_URL is Django's default, /accounts/login/, which this project does not serve.
    result = smoketest_without_admin(alias, tmp_path, URLS_WITHOUT_LOGIN)

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "PASS  frontend: GET / (" in out
    assert _line(out, "SKIP  backend: log in") == (
        "SKIP  backend: log in as a smoke-test user — skipped: no login page: django.contrib.admin is not "
        "installed and LOGIN_URL ('/accounts/login/') is not a page of the project's. Set SEEDDUMP_SMOKE_LOGIN_URL "
        "to its login form."
    )
    assert _line(out, "SKIP  frontend: GET / (logged in)") == (
        "SKIP  frontend: GET / (logged in) — skipped: backend: log in as a smoke-test user did not pass"
    )
    assert "create a smoke-test user" not in out  # no user is made where none can log in
    counts = _summary_counts(out)
    assert counts["failed"] == 0 and counts["skipped"] == out.count("  SKIP  ")


@pytest.mark.parametrize("alias", ["default"])
def test_without_the_admin_or_any_page_the_pages_are_skipped_and_counted(alias: str, tmp_path: Path) -> None:
    result = smoketest_without_admin(alias, tmp_path, URLS_WITHOUT_PAGES)

    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert _line(out, "SKIP  frontend: pages") == (
        "SKIP  frontend: pages — skipped: no page to check: django.contrib.admin is not installed and the "
        "project serves nothing at /. List pages in SEEDDUMP_SMOKE_PAGES (and SEEDDUMP_SMOKE_LOGIN_PAGES for the "
        "logged-in user)."
    )
    assert "frontend: GET" not in out and "log in" not in out
    counts = _summary_counts(out)
    assert counts["failed"] == 0 and counts["skipped"] == out.count("  SKIP  ")
