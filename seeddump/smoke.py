"""smoketest: the whole stack checked end to end, the way a new teammate or a CI job would.

Phases run in order: environment, database, backend, frontend, data. Each check passes, fails, is
skipped (because a check it depends on failed, or by an option), or is a note. A failed check never
stops the run; the checks that depend on it are reported as skipped with the reason.
"""

from __future__ import annotations

import contextlib
import functools
import http.cookiejar
import io
import json
import os
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
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connections

from seeddump import dumpfiles, postgres, restore
from seeddump.conf import conf
from seeddump.dumps import BOOKKEEPING_TABLES
from seeddump.exceptions import SeeddumpError

PASS, FAIL, SKIP, NOTE = "pass", "fail", "skip", "note"


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

    def request(self, path: str, data: dict[str, str] | None = None, timeout: float = 15) -> _HttpResponse:
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        headers = {"Referer": self.base_url + path} if data is not None else {}
        request = urllib.request.Request(self.base_url + path, data=body, headers=headers)
        try:
            with self.opener.open(request, timeout=timeout) as response:
                return _HttpResponse(
                    response.status, response.headers.get("Content-Type", ""), response.read(), response.url
                )
        except urllib.error.HTTPError as error:
            return _HttpResponse(error.code, error.headers.get("Content-Type", ""), error.read(), error.url)

    def cookie(self, name: str) -> str:
        return next((c.value or "" for c in self.cookies if c.name == name), "")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_command(port: int) -> list[str]:
    command = conf.SMOKE_SERVER_COMMAND or [
        sys.executable, "-m", "django", "runserver", "--noreload", "--skip-checks", "127.0.0.1:{port}",
    ]  # fmt: skip
    return [part.replace("{port}", str(port)) for part in command]


def _server_env() -> dict[str, str]:
    """The web server gets this process's environment and can import the same project."""
    paths = [os.getcwd()]
    if sys.argv and sys.argv[0].endswith("manage.py"):
        paths.insert(0, str(Path(sys.argv[0]).resolve().parent))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE") or settings.SETTINGS_MODULE,
        "PYTHONPATH": os.pathsep.join(paths),
        "PYTHONUNBUFFERED": "1",
    }


class SmokeTest:
    def __init__(
        self,
        environment: str,
        *,
        using: str = "default",
        skip_dump_restore: bool = False,
        skip_frontend: bool = False,
        report: Callable[[CheckResult], None] = lambda result: None,
        log: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.environment = environment
        self.using = using
        self.skip_dump_restore = skip_dump_restore
        self.skip_frontend = skip_frontend
        self.report_result = report
        self.log = log
        self.report = SmokeReport(environment)
        self.failed: dict[str, str] = {}  # what failed or was skipped -> the check that says so
        self.dump_path: Path | None = None
        self.metadata: dumpfiles.Metadata | None = None
        self.http: _Http | None = None

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
            self._environment()
            self._database()
            with self._web_server():
                self._backend()
                self._frontend()
            self._data()
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
            self.dump_path = dumpfiles.resolve_latest(conf.DIR, self.environment)
            self.metadata = dumpfiles.read_metadata(self.dump_path)
        except SeeddumpError as exc:
            return self._missing(str(exc))
        taken = dumpfiles.isoformat(self.metadata.timestamp)
        return f"{self.dump_path.name}: {self.metadata.total_rows} rows, taken {taken}"

    # --- 2. database ----------------------------------------------------------------------------

    def _database(self) -> None:
        self.check("database", "server accepts connections", self._check_server, needs=("env",), provides="server")
        if self.skip_dump_restore:
            self.check("database", "restore latest dump", self._skip("--skip-dump-restore"))
        else:
            self.check(
                "database", "restore latest dump", self._restore, needs=("server", "dump", "tools"), provides="restored"
            )
        self.check("database", "migrations applied", self._migrate, needs=("server", "restored"), provides="migrated")
        self.check("database", "query through Django", self._query, needs=("migrated",), provides="db")

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
        plan = restore.plan_restore(self.environment, dump=self.dump_path, using=self.using)
        result = restore.restore(plan, progress=self.log)
        return f"{result.rows} rows in {result.tables} tables in {result.seconds:.1f}s"

    def _migrate(self) -> str:
        output = io.StringIO()
        call_command("migrate", database=self.using, interactive=False, verbosity=1, stdout=output)
        self.log(output.getvalue())
        applied = output.getvalue().count("... OK")
        return f"{applied} migration(s) applied" if applied else "nothing to apply"

    def _query(self) -> str:
        with connections[self.using].cursor() as cursor:
            cursor.execute("SELECT count(*) FROM django_migrations")
            (count,) = cursor.fetchone()
        return f"{count} migrations recorded"

    # --- 3. backend -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def _web_server(self) -> Iterator[None]:
        process: subprocess.Popen[bytes] | None = None
        output = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below, after the server stops

        def start() -> str:
            nonlocal process
            port = _free_port()
            command = _server_command(port)
            self.log("starting: " + " ".join(command))
            process = subprocess.Popen(
                command, env=_server_env(), stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
            self.http = _Http(f"http://127.0.0.1:{port}")
            return self._wait_for_health(process, output)

        try:
            self.check("backend", f"web server answers {conf.SMOKE_HEALTH_URL}", start, needs=("db",), provides="http")
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

    def _wait_for_health(self, process: subprocess.Popen[bytes], output: Any) -> str:
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
                response = self.http.request(conf.SMOKE_HEALTH_URL, timeout=2)
            except OSError as exc:
                last_error = str(getattr(exc, "reason", exc))
                time.sleep(0.1)  # polling a server that is still starting, bounded by the deadline
                continue
            if response.status == 200:
                return f"{self.http.base_url} (pid {process.pid})"
            raise SeeddumpError(
                f"{conf.SMOKE_HEALTH_URL} answered {response.status}: {response.body[:200].decode(errors='replace')}"
            )
        raise SeeddumpError(
            f"The web server did not answer {conf.SMOKE_HEALTH_URL} within {conf.SMOKE_SERVER_TIMEOUT:.0f}s "
            f"({last_error})."
        )

    def _backend(self) -> None:
        for url in conf.SMOKE_API_URLS:
            self.check("backend", f"GET {url}", functools.partial(self._check_api, url), needs=("http",))

    def _check_api(self, url: str) -> str:
        assert self.http is not None
        response = self.http.request(url)
        if response.status != 200:
            raise SeeddumpError(f"{url} answered {response.status}, expected 200.")
        try:
            data = json.loads(response.body)
        except ValueError:
            raise SeeddumpError(f"{url} did not return JSON ({response.content_type}).") from None
        items = data.get("results", data) if isinstance(data, dict) else data
        if not items:
            raise SeeddumpError(f"{url} returned no data.")
        return f"200, {len(items)} item(s)"

    # --- 4. frontend ----------------------------------------------------------------------------

    def _frontend(self) -> None:
        if self.skip_frontend:
            self.check("frontend", "pages", self._skip("--skip-frontend"))
            return
        for url in conf.SMOKE_PAGES:
            self.check("frontend", f"GET {url}", functools.partial(self._check_page, url), needs=("http",))
        if not conf.SMOKE_LOGIN_PAGES:
            return
        with self._smoke_user() as credentials:
            self.check(
                "frontend",
                "log in as a smoke-test user",
                lambda: self._log_in(credentials),
                needs=("http",),
                provides="login",
            )
            for url in conf.SMOKE_LOGIN_PAGES:
                self.check(
                    "frontend",
                    f"GET {url} (logged in)",
                    functools.partial(self._check_page, url, logged_in=True),
                    needs=("login",),
                )
            if "login" not in self.failed:
                self._log_out()

    def _check_page(self, url: str, logged_in: bool = False) -> str:
        assert self.http is not None
        response = self.http.request(url)
        if response.status != 200:
            raise SeeddumpError(f"{url} answered {response.status}, expected 200.")
        if "text/html" not in response.content_type:
            raise SeeddumpError(f"{url} is {response.content_type or 'untyped'}, not an HTML page.")
        html = response.body.decode(errors="replace")
        if "</html>" not in html.lower():
            raise SeeddumpError(f"{url} did not render a whole page.")
        if logged_in and urllib.parse.urlparse(response.url).path == conf.SMOKE_LOGIN_URL:
            raise SeeddumpError(f"{url} sent the logged-in user back to the login page.")
        return f"200, {len(response.body)} bytes"

    @contextlib.contextmanager
    def _smoke_user(self) -> Iterator[tuple[str, str]]:
        """A throwaway superuser, removed afterwards whatever happens."""
        user_model = get_user_model()
        username, password = f"seeddump-smoke-{secrets.token_hex(4)}", secrets.token_urlsafe(24)
        user = None
        try:
            if "db" not in self.failed:
                user = user_model.objects.db_manager(self.using).create_superuser(
                    username, f"{username}@example.invalid", password
                )
            yield username, password
        finally:
            if user is not None:
                user.delete()

    def _log_in(self, credentials: tuple[str, str]) -> str:
        assert self.http is not None
        username, password = credentials
        login = self.http.request(conf.SMOKE_LOGIN_URL)
        if login.status != 200:
            raise SeeddumpError(f"{conf.SMOKE_LOGIN_URL} answered {login.status}.")
        target = conf.SMOKE_LOGIN_PAGES[0]
        response = self.http.request(
            conf.SMOKE_LOGIN_URL,
            {
                "username": username,
                "password": password,
                "csrfmiddlewaretoken": self.http.cookie("csrftoken"),
                "next": target,
            },
        )
        if urllib.parse.urlparse(response.url).path == conf.SMOKE_LOGIN_URL or not self.http.cookie("sessionid"):
            raise SeeddumpError(f"Logging in at {conf.SMOKE_LOGIN_URL} failed (answered {response.status}).")
        return f"logged in as {username}"

    def _log_out(self) -> None:
        assert self.http is not None
        logout = conf.SMOKE_LOGIN_URL.replace("login", "logout")
        with contextlib.suppress(OSError):
            self.http.request(logout, {"csrfmiddlewaretoken": self.http.cookie("csrftoken")})

    # --- 5. data --------------------------------------------------------------------------------

    def _data(self) -> None:
        self.check("data", "row counts match the dump's metadata", self._check_counts, needs=("db", "dump"))

    def _check_counts(self) -> str:
        if self.metadata is None:
            raise Skipped("skipped: there is no dump to compare with")
        settings_dict = postgres.settings_for(self.using)
        with postgres.connect(settings_dict) as conn:
            actual = postgres.count_rows(conn)
        expected = self.metadata.record_counts
        tables = sorted(t for t in set(expected) | set(actual) if t not in BOOKKEEPING_TABLES)
        problems = [
            f"{t}: {actual.get(t, 'no table')} rows, the dump has {expected.get(t, 'no table')}"
            for t in tables
            if actual.get(t) != expected.get(t)
        ]
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise SeeddumpError(f"The data does not match {self.metadata.dump_file}: {'; '.join(problems[:3])}{more}.")
        rows = sum(actual[t] for t in tables)
        return f"{len(tables)} tables match ({rows} rows; Django's bookkeeping tables not compared)"
