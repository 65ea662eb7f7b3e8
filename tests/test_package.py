"""The built distribution is the product: a wheel installed into a new virtual environment runs in a project
that is not this repository."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from django.db import connections
from psycopg import sql

from seeddump import postgres, snapshots, undo
from tests.conftest import REPO, as_the_project, own_name, run_bounded, shell_env

pytestmark = [pytest.mark.slow, pytest.mark.django_db(databases="__all__")]

SETTINGS = """
SECRET_KEY = "package-test"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes", "seeddump"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": "{name}", "USER": "{user}",
                          "HOST": "{host}", "PORT": "{port}"}}}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
"""

MANAGE = """
import sys
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
"""

SEED = """
from django.contrib.auth.models import User
User.objects.bulk_create(User(username=f"user{n}") for n in range(250))
"""


def run(argv: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    result = run_bounded(argv, cwd=cwd, env=shell_env(DJANGO_SETTINGS_MODULE="settings"), timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv)}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and sdist, built from the checkout as a release would be."""
    out = tmp_path_factory.mktemp("dist")
    before = sorted(p.name for p in REPO.iterdir())
    run([sys.executable, "-m", "build", "--outdir", str(out), str(REPO)], REPO, timeout=280)
    assert sorted(p.name for p in REPO.iterdir()) == before  # nothing left in the checkout (build/, egg-info)
    run([sys.executable, "-m", "twine", "check", "--strict", *map(str, out.iterdir())], REPO)
    return out


def test_the_wheel_holds_the_app_and_nothing_else(dist: Path) -> None:
    (wheel,) = dist.glob("seeddump-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("seeddump/py.typed", "seeddump/migrations/0001_initial.py", "seeddump/smoke_settings.py"):
        assert needed in names
    assert "seeddump/management/commands/restoredump.py" in names
    assert not [n for n in names if n.startswith(("tests/", "project/", "seeds/")) or "__pycache__" in n]
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "[pytest11]\nseeddump = seeddump.pytest_plugin" in zipfile.ZipFile(wheel).read(info).decode()
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert "Classifier: Framework :: Django :: 5.2" in metadata and "License-Expression: MIT" in metadata


@pytest.fixture
def project(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    if django_settings.SYSTEM_UNAVAILABLE:
        pytest.skip(f"system PostgreSQL not reachable: {django_settings.SYSTEM_UNAVAILABLE}")
    system = connections["system"].settings_dict
    name = own_name("package")
    folder = tmp_path / "someproject"
    folder.mkdir()
    (folder / "settings.py").write_text(
        SETTINGS.format(name=name, user=system["USER"], host=system["HOST"], port=system["PORT"] or 5432)
    )
    (folder / "manage.py").write_text(MANAGE)
    with postgres.connect_maintenance(system) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield folder, name
    with postgres.connect_maintenance(system) as admin:
        snapshots.drop_all(admin, folder / "seeds" / "dumps")
        undo.drop(admin, name)
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_wheel_installed_in_a_new_environment_dumps_and_restores(
    dist: Path, project: tuple[Path, str], tmp_path: Path
) -> None:
    """A project on psycopg2 (pretix's driver) installs the wheel: pip brings no psycopg 3, so Django and
    seeddump both stay on psycopg2, and the round trip works."""
    folder, name = project
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    python = str(venv / "bin" / "python")
    (wheel,) = dist.glob("seeddump-*.whl")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, str(wheel), "psycopg2-binary==2.9.10"], tmp_path, timeout=280)
    where = run([python, "-c", "import seeddump; print(seeddump.__file__)"], folder).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed wheel, not the checkout
    which = "import importlib.util as u, seeddump.driver as d; print(u.find_spec('psycopg') is None, d.NAME)"
    assert run([python, "-c", which], folder).stdout.split() == ["True", "psycopg2"]

    manage = [python, "manage.py"]
    run([*manage, "migrate", "-v0"], folder)
    run([*manage, "shell", "-c", SEED], folder)
    run([*manage, "generatedump", "dev"], folder)
    run([*manage, "shell", "-c", "from django.contrib.auth.models import User; User.objects.all().delete()"], folder)
    run([*manage, "restoredump", "dev", "--no-input", "--wait"], folder)
    with as_the_project(postgres.connect(connections["system"].settings_dict, name)) as conn:
        assert conn.execute("SELECT count(*) FROM auth_user").fetchone() == (250,)


def uv(args: list[str], cwd: Path, *, check: bool = True) -> subprocess.CompletedProcess:
    """uv as a developer runs it in their project: this interpreter, never one downloaded."""
    env = shell_env(DJANGO_SETTINGS_MODULE="settings", UV_PYTHON=sys.executable, UV_PYTHON_DOWNLOADS="never")
    result = run_bounded([str(Path(sys.executable).parent / "uv"), *args], cwd=cwd, env=env, timeout=280)
    assert not check or result.returncode == 0, f"uv {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def test_uv_adds_the_wheel_to_a_django_6_project_with_a_lock_file(
    dist: Path, project: tuple[Path, str], tmp_path: Path
) -> None:
    """A project made today (cookiecutter-django) installs with uv and keeps its pins in uv.lock; the wheel kept
    in the repository (the README's way for a team) is locked by a relative path, so a teammate's clone syncs."""
    if sys.version_info < (3, 12):
        pytest.skip(
            f"Django 6 needs Python 3.12+ and this run is on {sys.version.split()[0]}; test-versions.sh runs this "
            "test on Python 3.13 (seeds/scripts/versions.txt)"
        )
    folder, name = project
    (wheel,) = dist.glob("seeddump-*.whl")
    # The README's steps: a uv project pinned to Django 6, then `uv add` of the wheel.
    uv(["init", "--bare", "--name", "someproject"], folder)
    uv(["add", "Django>=6.0,<7"], folder)
    (folder / "vendor").mkdir()
    shutil.copy2(wheel, folder / "vendor" / wheel.name)
    uv(["add", f"./vendor/{wheel.name}", "psycopg[binary]"], folder)  # the project's driver
    lock = (folder / "uv.lock").read_text()
    assert 'name = "seeddump"' in lock and re.search(r'name = "django"\nversion = "6\.', lock)
    assert f'path = "vendor/{wheel.name}"' in lock and str(tmp_path) not in lock, lock

    manage = ["run", "python", "manage.py"]
    uv([*manage, "migrate", "-v0"], folder)
    uv([*manage, "shell", "-c", SEED], folder)
    uv([*manage, "generatedump", "dev"], folder)
    uv([*manage, "shell", "-c", "from django.contrib.auth.models import User; User.objects.all().delete()"], folder)
    restored = uv([*manage, "restoredump", "dev", "--no-input", "--wait"], folder)
    assert "Traceback" not in restored.stderr
    with as_the_project(postgres.connect(connections["system"].settings_dict, name)) as conn:
        assert conn.execute("SELECT count(*) FROM auth_user").fetchone() == (250,)

    # A teammate's clone of the repository, elsewhere: the lock file as it is installs there.
    clone = tmp_path / "teammate"
    shutil.copytree(folder, clone, ignore=shutil.ignore_patterns(".venv", "seeds", "__pycache__"))
    uv(["sync", "--locked"], clone)
    where = uv(["run", "--locked", "python", "-c", "import seeddump; print(seeddump.__file__)"], clone)
    assert where.stdout.strip().startswith(str(clone / ".venv")), where.stdout

    # A project pinned below what seeddump needs: uv refuses instead of moving the pin.
    pinned = tmp_path / "oldproject"
    pinned.mkdir()
    uv(["init", "--bare", "--name", "oldproject"], pinned)
    uv(["add", "Django>=4.2,<5"], pinned)
    refused = uv(["add", str(wheel)], pinned, check=False)
    assert refused.returncode != 0
    assert "seeddump" in refused.stderr and "django>=5.2" in refused.stderr.lower(), refused.stderr
    assert re.search(r'name = "django"\nversion = "4\.2\.', (pinned / "uv.lock").read_text())


def test_django_4_2_is_refused_by_pip_and_by_the_commands(dist: Path, tmp_path: Path) -> None:
    """Projects still on Django 4.2 (out of support since April 2026) are refused, never upgraded behind their
    back."""
    venv = tmp_path / "venv42"
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    run([*pip, "Django==4.2.*", "psycopg[binary]>=3.1.8"], tmp_path, timeout=280)
    (wheel,) = dist.glob("seeddump-*.whl")
    pinned = tmp_path / "requirements.txt"
    pinned.write_text("Django==4.2.*\n")

    # With the project's Django pinned, pip refuses instead of upgrading it.
    refused = run_bounded([*pip, "-c", str(pinned), str(wheel)], cwd=tmp_path, env=shell_env(), timeout=280)
    assert refused.returncode != 0 and "Cannot install seeddump==" in refused.stdout + refused.stderr

    # Installed anyway (--no-deps): every command says so in one check message, no traceback.
    run([*pip, "--no-deps", str(wheel)], tmp_path)
    folder = tmp_path / "oldproject"
    folder.mkdir()
    (folder / "settings.py").write_text(SETTINGS.format(name="postgres", user="postgres", host="127.0.0.1", port=5432))
    (folder / "manage.py").write_text(MANAGE)
    for command in ("generatedump", "restoredump", "smoketest", "listdumps"):
        argv = [str(venv / "bin" / "python"), "manage.py", command, *(["dev"] if command.endswith("dump") else [])]
        result = run_bounded(argv, cwd=folder, env=shell_env(DJANGO_SETTINGS_MODULE="settings"), timeout=120)
        assert result.returncode == 1, command
        assert "(seeddump.E001) seeddump needs Django 5.2 or newer; this project runs Django 4.2" in result.stderr
        assert "Traceback" not in result.stderr


# --- What is declared is what is run -------------------------------------------------------------------------


def declared(framework: str) -> set[str]:
    """The versions of ``framework`` ("Django" or "Python") the installed seeddump's classifiers name."""
    prefix = "Framework :: Django :: " if framework == "Django" else "Programming Language :: Python :: 3."
    classifiers = importlib.metadata.metadata("seeddump").get_all("Classifier") or []
    return {
        c.removeprefix(prefix) if framework == "Django" else "3." + c.removeprefix(prefix)
        for c in classifiers
        if c.startswith(prefix) and c.removeprefix(prefix).replace(".", "").isdigit()
    }


def combinations() -> list[dict[str, str]]:
    """The lines of seeds/scripts/versions.txt: the combinations seeds/scripts/test-versions.sh runs."""
    lines = (REPO / "seeds" / "scripts" / "versions.txt").read_text().splitlines()
    rows = [line.split() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return [dict(zip(("python", "django", "psycopg", "postgresql", "tests"), row, strict=True)) for row in rows]


def test_the_classifiers_name_exactly_the_versions_the_tests_run_on() -> None:
    runs = combinations()
    assert runs[0]["tests"] == "all" and {run["tests"] for run in runs[1:]} == {"core"}
    assert declared("Python") == {run["python"] for run in runs}
    assert declared("Django") == {run["django"] for run in runs}

    metadata = importlib.metadata.metadata("seeddump")
    oldest_python = min((run["python"] for run in runs), key=lambda v: tuple(map(int, v.split("."))))
    assert metadata["Requires-Python"] == f">={oldest_python}"
    oldest_django = min((run["django"] for run in runs), key=lambda v: tuple(map(int, v.split("."))))
    requires = metadata.get_all("Requires-Dist") or []
    assert f"django>={oldest_django}" in [r.lower().replace(" ", "") for r in requires]
    lowest_psycopg = min(
        (run["psycopg"] for run in runs if run["psycopg"] != "newest"), key=lambda v: tuple(map(int, v.split(".")))
    )
    # The driver is the project's: only the extra names psycopg 3, at the lowest version the tests run on.
    assert f"psycopg[binary]>={lowest_psycopg};extra=='psycopg'" in [r.lower().replace(" ", "") for r in requires]
    assert not [r for r in requires if r.lower().startswith("psycopg") and "extra" not in r]
