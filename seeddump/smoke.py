"""smoketest: the whole stack checked end to end, the way a new teammate or a CI job would.

Phases run in order: environment, database, backend, frontend, cleanup. Each check passes, fails, is
skipped (because a check it depends on failed, or by an option), or is a note. A failed check never
stops the run; the checks that depend on it are reported as skipped with the reason.

The latest dump is restored into a database of the smoke test's own beside the configured one (the
developer's data is never touched unless ``overwrite``); this process and the web server it starts
(``seeddump.smoke_settings``) are pointed at it, and it is dropped at the end. Its row counts are
compared with the dump's right after the restore, before migrations, logins or the project's signals
write anything.

A dump is code (``seeddump.sandbox``): the restore and the migrations on top of it run with the rights of the
configured database's owner at most, as restoredump's would (a throwaway member of it when seeddump connects as
another role; refused in one line where none can be had, unless ``trust``). So does everything after them that
reaches the restored database through Django (the query, the files, the smoke-test user, the web server): a
trigger or a view's function the dump shipped runs there too.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import html
import http
import http.cookiejar
import io
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.apps import apps
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections
from django.shortcuts import resolve_url
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from django.utils import translation
from django.utils.module_loading import import_string

from seeddump import databases, dumpfiles, media, postgres, restore, sandbox, staleness, testdatabases
from seeddump.conf import conf
from seeddump.dumps import BOOKKEEPING_TABLES
from seeddump.exceptions import SeeddumpError

PASS, FAIL, SKIP, NOTE = "pass", "fail", "skip", "note"

# Served by seeddump.views.SmokeHealthMiddleware in the smoke test's web server only.
HEALTH_PATH = "/__seeddump__/healthz/"


@dataclass
class CheckResult:
    phase: str
    name: str
    status: str
    seconds: float
    detail: str = ""


class Skipped(Exception):
    """Raised by a check that does not apply (it is reported as skipped, with the reason)."""


class Noted(Exception):
    """Raised by a check whose finding is worth saying but is not a failure."""


@dataclass
class SmokeReport:
    environment: str
    results: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0
    log_file: str = ""

    @property
    def passed(self) -> bool:
        return not any(r.status == FAIL for r in self.results)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def failures(self) -> list[CheckResult]:
        return [r for r in self.results if r.status == FAIL]

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "passed": self.passed,
            "seconds": round(self.seconds, 3),
            "counts": {status: self.count(status) for status in (PASS, FAIL, SKIP, NOTE)},
            "logFile": self.log_file,
            "checks": [{**asdict(r), "seconds": round(r.seconds, 3)} for r in self.results],
        }


@dataclass
class _HttpResponse:
    status: int
    content_type: str
    body: bytes
    url: str


class _Http:
    """A small HTTP client with a cookie jar, for the server the smoke test started."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))

    def request(
        self,
        path: str,
        data: dict[str, str] | None = None,
        timeout: float = 15,
        headers: dict[str, str] | None = None,
    ) -> _HttpResponse:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        sent = {**({"Referer": self.base_url + path} if data is not None else {}), **(headers or {})}
        request = urllib.request.Request(self.base_url + path, data=body, headers=sent)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return _HttpResponse(
                    response.status, response.headers.get("Content-Type", ""), response.read(), response.url
                )
        except urllib.error.HTTPError as error:
            return _HttpResponse(error.code, error.headers.get("Content-Type", ""), error.read(), error.url)

    def cookie(self, name: str) -> str:
        return next((c.value or "" for c in self.cookies if c.name == name), "")

    def anonymous(self) -> _Http:
        return _Http(self.base_url)


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def reason(response: _HttpResponse) -> str:
    """What went wrong, in a few words: a JSON error's message, an HTML page's title, never the page."""
    text = response.body[:200_000].decode(errors="replace")
    if "json" in response.content_type:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("detail", "error", "message", "status"):
                if isinstance(data.get(key), str) and data[key].strip():
                    return _short(data[key])
    if "html" in response.content_type or "<html" in text[:1000].lower():
        if "CSRF verification failed" in text:
            why = re.search(r"<pre[^>]*>(.*?)</pre>", text, re.S | re.I)
            detail = f": {_short(html.unescape(why.group(1)), 80)}" if why else ""
            return f"CSRF verification failed{detail}"
        title = re.search(r"<title[^>]*>(.*?)</title>", text, re.S | re.I)
        if title and title.group(1).strip():
            return _short(html.unescape(title.group(1)))
        text = html.unescape(re.sub(r"<[^>]+>", " ", text))
    try:
        phrase = http.HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    return _short(text) or phrase or "no body"


def _answered(url: str, response: _HttpResponse) -> str:
    return f"{url} answered {response.status} ({reason(response)})"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_command(port: int) -> list[str]:
    command = conf.SMOKE_SERVER_COMMAND or [
        sys.executable, "-m", "django", "runserver", "--noreload", "--skip-checks", "127.0.0.1:{port}",
    ]  # fmt: skip
    return [part.replace("{port}", str(port)) for part in command]


def _server_env(
    using: str, database: str | None, media_root: Path | None = None, login: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The web server gets this process's environment, can import the same project, and runs with
    ``seeddump.smoke_settings``: the project's settings pointed at ``database`` (and ``media_root``), logged in
    with ``login``'s USER and PASSWORD and its libpq ``options`` when given (in the environment, never argv)."""
    paths = [os.getcwd()]
    if sys.argv and sys.argv[0].endswith("manage.py"):
        paths.insert(0, str(Path(sys.argv[0]).resolve().parent))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    server = {
        "settings": settings.SETTINGS_MODULE,
        "alias": using,
        "database": database,
        "health_path": HEALTH_PATH,
        "media_root": str(media_root) if media_root is not None else None,
        "login": None
        if login is None
        else {
            "USER": login.get("USER"),
            "PASSWORD": login.get("PASSWORD"),
            "options": (login.get("OPTIONS") or {}).get("options"),
        },
    }
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "seeddump.smoke_settings",
        "SEEDDUMP_SMOKE_SERVER": json.dumps(server),
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONUNBUFFERED": "1",
    }


def smoke_database_name(target: str) -> str:
    """The database the smoke test restores into, beside ``target`` on the same server."""
    return f"seeddump_smoke_{hashlib.sha256(target.encode()).hexdigest()[:8]}"


def smoke_media_root(target: str) -> Path:
    """Where the smoke test unpacks the dump's media: its own folder, never the developer's MEDIA_ROOT."""
    return conf.DIR / f"smoke-media-{hashlib.sha256(target.encode()).hexdigest()[:8]}"


def _reversed(name: str) -> str | None:
    try:
        return reverse(name)
    except NoReverseMatch:
        return None


def _served(path: str) -> str | None:
    """``path`` as the project serves it: itself where its URLs have a view for it, else under the default
    language's prefix (``i18n_patterns``); None where they have none."""
    with translation.override(settings.LANGUAGE_CODE):
        for candidate in dict.fromkeys((path, f"/{translation.get_language()}{path}")):
            try:
                resolve(candidate)
            except Resolver404:
                continue
            return candidate
    return None


def _without_admin() -> str:
    """Why the admin's pages are not checked, for a skipped check's reason."""
    if apps.is_installed("django.contrib.admin"):
        return "the admin's URLs are not routed"
    return "django.contrib.admin is not installed"


def project_login_url() -> str | None:
    """settings.LOGIN_URL (a path or a URL name) where the project serves it on this site; else None."""
    with translation.override(settings.LANGUAGE_CODE):
        try:
            url = urllib.parse.urlparse(resolve_url(settings.LOGIN_URL))
        except NoReverseMatch:
            return None
    if url.scheme or url.netloc or not url.path.startswith("/"):
        return None  # another site's (single sign-on): no form here for the smoke-test user
    return _served(url.path)


def login_url() -> str | None:
    """Where the smoke-test user logs in: SEEDDUMP_SMOKE_LOGIN_URL, else the admin's login page, else
    settings.LOGIN_URL where the project serves it (NetBox, pretix: no admin)."""
    return conf.SMOKE_LOGIN_URL or _reversed("admin:login") or project_login_url()


def no_login_url() -> str:
    """Why the smoke-test user has nowhere to log in, for the skipped check's reason."""
    return (
        f"skipped: no login page: {_without_admin()} and LOGIN_URL ({str(settings.LOGIN_URL)!r}) is not a page of "
        "the project's. Set SEEDDUMP_SMOKE_LOGIN_URL to its login form."
    )


def anonymous_pages() -> list[str]:
    """SEEDDUMP_SMOKE_PAGES; else the admin's login page; else, without the admin, the root URL and the login
    page, where the project serves them."""
    if conf.SMOKE_PAGES is not None:
        return conf.SMOKE_PAGES
    admin = _reversed("admin:login")
    if admin:
        return [admin]
    return [url for url in dict.fromkeys((_served("/"), login_url())) if url]


def login_pages() -> list[str]:
    """SEEDDUMP_SMOKE_LOGIN_PAGES; else the admin's index and dump list; else, without the admin, the root URL
    where the project serves it."""
    if conf.SMOKE_LOGIN_PAGES is not None:
        return conf.SMOKE_LOGIN_PAGES
    admin = [url for url in (_reversed("admin:index"), _reversed("admin:seeddump_dumprecord_changelist")) if url]
    return admin or [url for url in [_served("/")] if url]


def no_pages() -> str:
    """Why no page is checked, for the skipped check's reason."""
    if conf.SMOKE_PAGES is not None and conf.SMOKE_LOGIN_PAGES is not None:
        return "skipped: SEEDDUMP_SMOKE_PAGES and SEEDDUMP_SMOKE_LOGIN_PAGES are empty"
    return (
        f"skipped: no page to check: {_without_admin()} and the project serves nothing at /. List pages in "
        "SEEDDUMP_SMOKE_PAGES (and SEEDDUMP_SMOKE_LOGIN_PAGES for the logged-in user)."
    )


class SmokeTest:
    def __init__(
        self,
        environment: str,
        *,
        using: str = "default",
        skip_dump_restore: bool = False,
        skip_frontend: bool = False,
        overwrite: bool = False,
        keep_database: bool = False,
        trust: bool = False,
        report: Callable[[CheckResult], None] = lambda result: None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.environment = environment
        self.using = using
        self.skip_dump_restore = skip_dump_restore
        self.skip_frontend = skip_frontend
        self.overwrite = overwrite
        self.keep_database = keep_database
        self.trust = trust
        self.restored_as: tuple[str, bool] | None = None  # (owner, trusted) of the restored dump's code
        self.report_result = report
        self.log = log
        self.report = SmokeReport(environment)
        self.failed: dict[str, str] = {}  # what failed or was skipped -> the check that says so
        self.dump_path: Path | None = None
        self.metadata: dumpfiles.Metadata | None = None
        self.http: _Http | None = None
        self.smoke_database: str | None = None  # restored by this run, dropped at the end
        self.smoke_media: Path | None = None  # the dump's media, unpacked by this run, removed at the end
        self.media_root: Path | None = None  # where the files of the restored FileFields are
        self.user: Any = None
        self.login: Mapping[str, Any] | None = None  # the sessions after migrate: a throwaway member of the owner
        self.password = secrets.token_urlsafe(24)
        self.api_headers: dict[str, str] = {}

    # --- running checks -------------------------------------------------------------------------

    def check(
        self, phase: str, name: str, run: Callable[[], str], *, needs: tuple[str, ...] = (), provides: str = ""
    ) -> None:
        started = time.monotonic()
        missing = [need for need in needs if need in self.failed]
        if missing:
            status, detail = SKIP, f"skipped: {self.failed[missing[0]]} did not pass"
        else:
            try:
                status, detail = PASS, run()
            except Skipped as exc:
                status, detail = SKIP, str(exc)
            except Noted as exc:
                status, detail = NOTE, str(exc)
            except SeeddumpError as exc:
                status, detail = FAIL, str(exc)
            except Exception as exc:  # a smoke test reports what broke; the traceback goes to the log
                status, detail = (
                    FAIL,
                    f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}",
                )
                self.log(traceback.format_exc())
        if provides and status in (FAIL, SKIP):
            self.failed[provides] = f"{phase}: {name}"
        result = CheckResult(phase, name, status, time.monotonic() - started, detail)
        self.report.results.append(result)
        self.log(f"[{status.upper():4}] {phase}: {name} ({result.seconds:.2f}s) {detail}")
        self.report_result(result)

    def run(self) -> SmokeReport:
        started = time.monotonic()
        try:
            with contextlib.ExitStack() as stack:
                self._environment()
                self._restore_phase()
                if self.smoke_database is not None:
                    stack.callback(self._cleanup)
                    stack.enter_context(postgres.django_connection_to(self.using, self.smoke_database))
                self._database()
                with self._as_the_owner_at_most():
                    self._through_django()
                    with self._web_server(), self._smoke_user():
                        self._backend()
                        self._frontend()
        finally:
            self.report.seconds = time.monotonic() - started
        return self.report

    # --- 1. environment -------------------------------------------------------------------------

    def _environment(self) -> None:
        self.check("environment", "environment name", self._check_environment_name, provides="env")
        for program in ("pg_dump", "pg_restore"):
            self.check(
                "environment", f"{program} installed", functools.partial(self._check_program, program), provides="tools"
            )
        self.check("environment", "dumps folder", self._check_folder, needs=("env",), provides="folder")
        self.check("environment", "latest dump and metadata", self._check_latest, needs=("folder",), provides="dump")

    def _check_environment_name(self) -> str:
        dumpfiles.validate_environment(self.environment)
        restore.check_not_protected(self.environment)
        return f"'{self.environment}' is not protected"

    def _check_program(self, name: str) -> str:
        found = postgres.installed_programs(name)
        if not found:
            raise SeeddumpError(f"'{name}' is not installed. Install the PostgreSQL client programs.")
        return ", ".join(f"{p.version} at {p.path}" for p in found)

    def _missing(self, message: str) -> str:
        if self.skip_dump_restore:
            raise Noted(message + " (not needed with --skip-dump-restore)")
        raise SeeddumpError(message)

    def _check_folder(self) -> str:
        if not conf.DIR.is_dir():
            return self._missing(
                f"The dumps folder {conf.DIR} does not exist. "
                f"Make a dump with: python manage.py generatedump {self.environment}"
            )
        return str(conf.DIR)

    def _check_latest(self) -> str:
        try:
            choice = staleness.choose(conf.DIR, self.environment)  # the dump restoredump would restore
        except SeeddumpError as exc:
            return self._missing(str(exc))
        if not choice.fits:
            return self._missing(choice.refusal())
        self.dump_path, self.metadata = choice.dump_path, choice.status.metadata
        taken = dumpfiles.isoformat(self.metadata.timestamp)
        why = " (the latest holds migrations this code does not have)" if choice.passed_over else ""
        return f"{self.dump_path.name}{why}: {self.metadata.total_rows} rows, taken {taken}"

    # --- 2. database ----------------------------------------------------------------------------

    def _restore_phase(self) -> None:
        self.check("database", "server accepts connections", self._check_server, needs=("env",), provides="server")
        if self.skip_dump_restore:
            self.check("database", "restore latest dump", self._skip("--skip-dump-restore"))
        else:
            self.check(
                "database", "restore latest dump", self._restore, needs=("server", "dump", "tools"), provides="restored"
            )

    def _database(self) -> None:
        # Compared first: migrations, the smoke-test user and the project's signals write rows later.
        self.check("database", "row counts match the dump's metadata", self._check_counts, needs=("server", "restored"))
        self.check("database", "migrations applied", self._migrate, needs=("server", "restored"), provides="migrated")

    def _through_django(self) -> None:
        self.check("database", "query through Django", self._query, needs=("migrated",), provides="db")
        self.check("database", "files of FileFields exist", self._check_files, needs=("db",))

    @contextlib.contextmanager
    def _as_the_owner_at_most(self) -> Iterator[None]:
        """From the query on, Django's sessions (this process's and the web server's) log in as restoredump's
        would run the dump's code: a throwaway member of the owner when seeddump connects as another role."""
        if self.restored_as is None or "migrated" in self.failed:  # nothing restored, or nothing runs after
            yield
            return
        owner, trusted = self.restored_as
        settings_dict = postgres.settings_for(self.using)
        with (
            postgres.user_errors(settings_dict),
            postgres.connect_maintenance(settings_dict) as admin,
            sandbox.Sandbox(admin, settings_dict, owner, trusted=trusted) as dump_code,
        ):
            if not dump_code.needed:
                yield
                return
            self.login = dump_code.login()
            try:
                with postgres.django_connection_to(self.using, str(settings_dict["NAME"]), self.login):
                    yield
            finally:
                self.login = None

    @staticmethod
    def _skip(reason: str) -> Callable[[], str]:
        def skip() -> str:
            raise Skipped(f"skipped: {reason}")

        return skip

    def _check_server(self) -> str:
        settings_dict = postgres.settings_for(self.using)
        with postgres.connect(settings_dict, conf.MAINTENANCE_DB, wait=conf.SMOKE_DATABASE_WAIT) as conn:
            return f"PostgreSQL {postgres.server_version_text(conn)} at {postgres.server_of(settings_dict).describe()}"

    def _restore(self) -> str:
        plan = restore.plan_restore(self.environment, dump=self.dump_path, using=self.using, trust=self.trust)
        settings_dict = postgres.settings_for(self.using)
        target = str(settings_dict.get("NAME") or "")
        with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
            owner = testdatabases.owner_beside(admin, settings_dict, target)
        if self.overwrite:
            result = restore.restore(plan, progress=self.log)
            self.media_root, self.restored_as = result.media_root, (owner, plan.trusted)
            return f"{result.rows} rows in {result.tables} tables into '{result.database}' in {result.seconds:.1f}s"
        name = smoke_database_name(target)
        with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
            if databases.exists(admin, name) and not databases.is_ours(admin, name):
                raise SeeddumpError(
                    f"A database '{name}' that seeddump did not make is on the server; the smoke test will not "
                    "restore over it. Drop it, or pass --overwrite to test the configured database itself."
                )
        folder = smoke_media_root(target) if plan.media_archive is not None else None
        with testdatabases.restoring_as(owner):  # as restoredump would restore the configured database
            result = restore.restore(plan, restore.RestoreOptions(database=name, media_root=folder), progress=self.log)
        self.smoke_database, self.smoke_media, self.media_root = name, folder, folder
        self.restored_as = (owner, plan.trusted)
        with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
            databases.label(admin, name, {"seeddump": "smoke", "database": target})
        files = f" and its media into {folder}" if folder is not None and plan.metadata.media is not None else ""
        return (
            f"{result.rows} rows in {result.tables} tables into '{name}'{files} (beside '{target}', which is not "
            f"touched) in {result.seconds:.1f}s"
        )

    def _migrate(self) -> str:
        if self.restored_as is not None:  # the dump's code (a trigger on django_migrations) runs as the owner
            owner, trusted = self.restored_as
            database = str(postgres.settings_for(self.using)["NAME"])
            said = testdatabases.migrate_as(self.using, database, owner, trusted=trusted)
        else:
            output = io.StringIO()
            call_command("migrate", database=self.using, interactive=False, verbosity=1, stdout=output)
            said = output.getvalue()
        self.log(said)
        applied = said.count("... OK")
        return f"{applied} migration(s) applied" if applied else "nothing to apply"

    def _query(self) -> str:
        with connections[self.using].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_migrations")
            (count,) = cursor.fetchone()
        return f"{count} migrations recorded"

    def _check_files(self) -> str:
        if conf.SMOKE_FILE_SAMPLE <= 0:
            raise Skipped("skipped: SEEDDUMP_SMOKE_FILE_SAMPLE is 0")
        root = self.media_root
        if root is None:
            try:
                root = media.media_root()
            except SeeddumpError:
                root = Path(settings.MEDIA_ROOT or ".")
        sample = media.sample_files(self.using, root, conf.SMOKE_FILE_SAMPLE)
        unchecked = f"; not on this machine, not checked: {', '.join(sample.unchecked)}" if sample.unchecked else ""
        if sample.missing:
            shown = ", ".join(f"{name} ({label})" for name, label in sample.missing[:3])
            more = f" and {len(sample.missing) - 3} more" if len(sample.missing) > 3 else ""
            has_media = self.metadata is not None and self.metadata.media is not None
            hint = (
                "The dump's media archive does not hold them: regenerate it with generatedump --media after seeding."
                if has_media
                else "The dump has no media: make it with generatedump --media so the seed's files travel with it."
            )
            raise SeeddumpError(
                f"{len(sample.missing)} of {sample.checked} sampled file(s) are missing from {root}: {shown}{more}. "
                f"{hint}"
            )
        if not sample.fields:
            return "no FileField to check" + unchecked
        return f"{sample.checked} sampled file(s) of {', '.join(sample.fields)} exist in {root}{unchecked}"

    def _check_counts(self) -> str:
        if self.metadata is None:
            raise Skipped("skipped: there is no dump to compare with")
        settings_dict = postgres.settings_for(self.using)
        with postgres.connect(settings_dict) as conn:
            actual = postgres.count_rows(conn)
        expected = self.metadata.record_counts
        ignored = BOOKKEEPING_TABLES | conf.SMOKE_IGNORE_TABLES
        tables = sorted(t for t in set(expected) | set(actual) if t not in ignored)
        problems = [
            f"{t}: {actual.get(t, 'no table')} rows, the dump has {expected.get(t, 'no table')}"
            for t in tables
            if actual.get(t) != expected.get(t)
        ]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise SeeddumpError(
                f"The data does not match {self.metadata.dump_file}: {'; '.join(problems[:3])}{more}. "
                "Tables that change on their own can be listed in SEEDDUMP_SMOKE_IGNORE_TABLES."
            )
        rows = sum(actual[t] for t in tables)
        return f"{len(tables)} tables match ({rows} rows; Django's bookkeeping tables not compared)"

    # --- 3. backend -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _web_server(self) -> Iterator[None]:
        process: subprocess.Popen[bytes] | None = None
        output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the server stops
        health = conf.SMOKE_HEALTH_URL or HEALTH_PATH

        def start() -> str:
            nonlocal process
            port = _free_port()
            command = _server_command(port)
            self.log("starting: " + " ".join(command))
            process = subprocess.Popen(
                command,
                env=_server_env(
                    self.using, connections[self.using].settings_dict["NAME"], self.smoke_media, self.login
                ),
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            self.http = _Http(f"http://127.0.0.1:{port}")
            return self._wait_for_health(process, output, health)

        try:
            self.check("backend", f"web server answers {health}", start, needs=("db",), provides="http")
            yield
        finally:
            if process is not None:
                process.terminate()
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
                output.seek(0)
                self.log("web server output:\n" + output.read().decode(errors="replace"))
            output.close()

    def _wait_for_health(self, process: subprocess.Popen[bytes], output: Any, health: str) -> str:
        assert self.http is not None
        deadline = time.monotonic() + conf.SMOKE_SERVER_TIMEOUT
        last_error = "no answer"
        while time.monotonic() < deadline:
            if process.poll() is not None:
                output.seek(0)
                lines = [line for line in output.read().decode(errors="replace").splitlines() if line.strip()]
                raise SeeddumpError(
                    f"The web server exited with code {process.returncode}: {lines[-1] if lines else 'no output'}"
                )
            try:
                response = self.http.request(health, timeout=2)
            except OSError as exc:
                last_error = str(getattr(exc, "reason", exc))
                time.sleep(0.1)  # polling a server that is still starting, bounded by the deadline
                continue
            if response.status == 200:
                return f"{self.http.base_url} (pid {process.pid})"
            hint = (
                ' Add path("", include("seeddump.urls")) to your URLs, or unset SEEDDUMP_SMOKE_HEALTH_URL.'
                if response.status == 404 and conf.SMOKE_HEALTH_URL
                else ""
            )
            raise SeeddumpError(f"{_answered(health, response)}.{hint}")
        raise SeeddumpError(
            f"The web server did not answer {health} within {conf.SMOKE_SERVER_TIMEOUT:.0f}s ({last_error})."
        )

    def _wants_login(self) -> bool:
        return bool(conf.SMOKE_API_URLS or (login_pages() and not self.skip_frontend))

    def _backend(self) -> None:
        if self._wants_login():  # skipped with the reason where there is no login page, never left out
            self.check("backend", "log in as a smoke-test user", self._log_in, needs=("http", "user"), provides="login")
        for url in conf.SMOKE_API_URLS:
            self.check("backend", f"GET {url}", functools.partial(self._check_api, url), needs=("http",))

    def _check_api(self, url: str) -> str:
        assert self.http is not None
        response = self.http.request(url, headers=self.api_headers)
        if response.status != 200:
            raise SeeddumpError(f"{_answered(url, response)}, expected 200{self._as_whom()}.")
        try:
            data = json.loads(response.body)
        except ValueError:
            raise SeeddumpError(f"{url} did not return JSON ({response.content_type or 'untyped'}).") from None
        items = data.get("results", data) if isinstance(data, dict) else data
        if not items:
            raise SeeddumpError(f"{url} returned no data.")
        return f"200, {len(items)} item(s)"

    def _as_whom(self) -> str:
        if self.api_headers:
            return " with the headers of SEEDDUMP_SMOKE_API_HEADERS"
        if "login" not in self.failed and self.user is not None:
            return " as the logged-in smoke-test user (set SEEDDUMP_SMOKE_API_HEADERS for a token-based API)"
        return " without logging in"

    # --- 4. frontend ----------------------------------------------------------------------------

    def _frontend(self) -> None:
        if self.skip_frontend:
            self.check("frontend", "pages", self._skip("--skip-frontend"))
            return
        anonymous, logged_in = anonymous_pages(), login_pages()
        if not anonymous and not logged_in:  # said as skipped: a smoke test that checked no page must not pass quietly
            self.check("frontend", "pages", self._skip(no_pages().removeprefix("skipped: ")))
            return
        for url in anonymous:
            self.check("frontend", f"GET {url}", functools.partial(self._check_page, url), needs=("http",))
        for url in logged_in:
            self.check(
                "frontend",
                f"GET {url} (logged in)",
                functools.partial(self._check_page, url, logged_in=True),
                needs=("login",),
            )

    def _check_page(self, url: str, logged_in: bool = False) -> str:
        assert self.http is not None
        response = (self.http if logged_in else self.http.anonymous()).request(url)
        if response.status != 200:
            raise SeeddumpError(f"{_answered(url, response)}, expected 200.")
        if "text/html" not in response.content_type:
            raise SeeddumpError(f"{url} is {response.content_type or 'untyped'}, not an HTML page.")
        html_text = response.body.decode(errors="replace")
        if "</html>" not in html_text.lower():
            raise SeeddumpError(f"{url} did not render a whole page.")
        landed = urllib.parse.urlparse(response.url)
        if logged_in and landed.path == login_url():
            raise SeeddumpError(f"{url} sent the logged-in user back to the login page.")
        where = landed.path + (f"?{landed.query}" if landed.query else "")
        redirected = f" after a redirect to {where}" if where != url else ""
        return f"200{redirected}, {len(response.body)} bytes"

    # --- the smoke-test user --------------------------------------------------------------------

    @contextlib.contextmanager
    def _smoke_user(self) -> Iterator[None]:
        """A throwaway superuser, removed afterwards whatever happens; only when there is a login page
        and an API or a page to check logged in."""
        if self._wants_login() and login_url() is not None:
            self.check("backend", "create a smoke-test user", self._create_user, needs=("db", "http"), provides="user")
        try:
            yield
        finally:
            if self.user is not None:
                with contextlib.suppress(Exception):  # the database may be what failed
                    self.user.delete()

    def _create_user(self) -> str:
        user_model = get_user_model()
        username = f"seeddump-smoke-{secrets.token_hex(4)}"
        if getattr(user_model, "EMAIL_FIELD", "email") == user_model.USERNAME_FIELD:
            username += "@example.invalid"  # logs in with an e-mail address (pretix): its form checks the shape
        fields: dict[str, Any] = {user_model.USERNAME_FIELD: username, "password": self.password}
        for name in getattr(user_model, "REQUIRED_FIELDS", []):
            if name == "email" or name == getattr(user_model, "EMAIL_FIELD", "email"):
                fields[name] = f"{username}@example.invalid"
        try:
            self.user = user_model.objects.db_manager(self.using).create_superuser(**fields)
        except TypeError as exc:
            raise SeeddumpError(
                f"Could not create the smoke-test superuser with {user_model.__name__}.objects.create_superuser "
                f"({exc}). Set SEEDDUMP_SMOKE_LOGIN_PAGES = [] and SEEDDUMP_SMOKE_API_URLS = [] to skip logging in."
            ) from None
        if conf.SMOKE_API_HEADERS:
            maker = conf.SMOKE_API_HEADERS
            if isinstance(maker, str):
                maker = import_string(maker)
            if not callable(maker):
                raise SeeddumpError("SEEDDUMP_SMOKE_API_HEADERS must be a callable or its dotted path.")
            self.api_headers = {str(k): str(v) for k, v in dict(maker(self.user)).items()}
        return f"{username} ({user_model._meta.label})"

    def _log_in(self) -> str:
        url = login_url()
        if url is None:
            raise Skipped(no_login_url())
        assert self.http is not None and self.user is not None
        login = self.http.request(url)
        if login.status != 200:
            raise SeeddumpError(f"{_answered(url, login)}. Set SEEDDUMP_SMOKE_LOGIN_URL to your login page.")
        csrf = self.http.cookie(settings.CSRF_COOKIE_NAME)
        target = (login_pages() or ["/"])[0]  # not the login page: a form showing itself again is a refusal
        field = self.user.USERNAME_FIELD
        username = getattr(self.user, field)
        # Django's AuthenticationForm calls it "username" whatever the model's field; other forms by that field.
        form = {"username": username, field: username, "password": self.password, "csrfmiddlewaretoken": csrf}
        response = self.http.request(url, {**form, "next": target})
        landed = urllib.parse.urlparse(response.url).path
        if self.http.cookie(settings.SESSION_COOKIE_NAME) and landed != url:
            return f"logged in as {username}"
        if response.status == 200 and landed == url:
            page = response.body.decode(errors="replace")
            refused = re.search(r'class="[^"]*error[^"]*"[^>]*>(.*?)</(?:p|div|li|ul)>', page, re.S)
            why = _short(html.unescape(re.sub(r"<[^>]+>", " ", refused.group(1))), 100) if refused else ""
            raise SeeddumpError(
                f"Logging in at {url} did not log the smoke-test superuser in: "
                + (f"the form said '{why}'" if why else "the login page came back")
                + " (an authentication backend that refuses it, or a lockout such as django-axes?)."
            )
        hint = "" if csrf else f"; the login page set no {settings.CSRF_COOKIE_NAME} cookie to send back"
        raise SeeddumpError(f"Logging in at {_answered(url, response)}{hint}.")

    # --- 5. cleanup -----------------------------------------------------------------------------

    def _cleanup(self) -> None:
        if self.smoke_database is None:
            return
        name, folder = self.smoke_database, self.smoke_media
        if self.keep_database:
            self.check("cleanup", f"keep {name}", lambda: f"kept for you to look at; drop it with: dropdb {name}")
            if folder is not None:
                self.check("cleanup", f"keep {folder}", lambda: "kept with the database")
            return
        self.check("cleanup", f"drop {name}", lambda: self._drop(name))
        if folder is not None:
            self.check("cleanup", f"remove {folder}", lambda: self._remove(folder))

    @staticmethod
    def _remove(folder: Path) -> str:
        media.drop(folder)
        if folder.exists():
            raise SeeddumpError(f"Could not remove {folder}; remove it by hand.")
        return "removed"

    def _drop(self, name: str) -> str:
        connections[self.using].close()
        settings_dict = postgres.settings_for(self.using)
        with postgres.user_errors(settings_dict), postgres.connect_maintenance(settings_dict) as admin:
            databases.take_back(admin, name)
            if not databases.drop(admin, name):
                raise SeeddumpError(f"Could not drop '{name}': it is not seeddump's. Drop it yourself.")
        return "dropped"
