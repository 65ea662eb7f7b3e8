"""Settings where a project has no settings.py of its own: every SEEDDUMP_* from the environment, seeddump in a
NetBox-style PLUGINS list with its options in PLUGINS_CONFIG, and the checks that say when a setting is not seen.

Each test is a small project in a folder of its own whose settings module adds seeddump in one line; its
database is the alias's test database.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.db import connections

from seeddump import postgres, snapshots
from seeddump.conf import conf
from tests.conftest import REPO, run_bounded, shell_env

pytestmark = pytest.mark.django_db(transaction=True, databases="__all__")

# Everything but seeddump, as a platform that builds its settings itself would have it.
BASE = """
SECRET_KEY = "settings-sources"
INSTALLED_APPS = ["django.contrib.auth", "django.contrib.contenttypes"]
DATABASES = {{"default": {{"ENGINE": "django.db.backends.postgresql", "NAME": {name!r}, "USER": {user!r},
                          "HOST": {host!r}, "PORT": {port!r}}}}}
USE_TZ = True
"""


def project(tmp_path: Path, alias: str, settings_text: str, **files: str) -> Path:
    sd = connections[alias].settings_dict
    folder = tmp_path / "platform"
    folder.mkdir(exist_ok=True)
    base = BASE.format(name=sd["NAME"], user=sd["USER"], host=sd["HOST"], port=str(sd["PORT"] or ""))
    (folder / "settings.py").write_text(base + textwrap.dedent(settings_text))
    manage = "import sys\nfrom django.core.management import execute_from_command_line\n"
    (folder / "manage.py").write_text(manage + "execute_from_command_line(sys.argv)\n")
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return folder


def seeded(alias: str) -> None:
    """Rows to dump: the demo's seed, in the test database the small project points at."""
    call_command("seed", "dev", scale=1, database=alias, verbosity=0)


def run(folder: Path, *args: str, **env: str):
    connections.close_all()  # a restore in the child ends every session on the database it replaces
    # The project's folder, then this checkout (the seeddump under test).
    environment = shell_env(DJANGO_SETTINGS_MODULE="settings", PYTHONPATH=f"{folder}{os.pathsep}{REPO}", **env)
    return run_bounded([sys.executable, "manage.py", *args], cwd=folder, env=environment, timeout=180)


@pytest.fixture
def caches(alias: str) -> Iterator[list[Path]]:
    """Dumps folders whose snapshot cache a test's restores left on the alias's server: dropped afterwards."""
    folders: list[Path] = []
    yield folders
    with postgres.connect_maintenance(connections[alias].settings_dict) as admin:
        for folder in folders:
            snapshots.drop_all(admin, folder)


def bin_dirs() -> str:
    return ",".join(str(p) for p in django_settings.SEEDDUMP_PG_BIN_DIRS)


def test_every_setting_can_come_from_the_environment(alias: str, tmp_path: Path, caches: list[Path]) -> None:
    seeded(alias)
    folder = project(tmp_path, alias, 'INSTALLED_APPS += ["seeddump"]\n')
    dumps = tmp_path / "dumps-from-env"
    caches.append(dumps)
    env = {
        "SEEDDUMP_DIR": str(dumps),
        "SEEDDUMP_PG_BIN_DIRS": bin_dirs(),  # a list, comma-separated
        "SEEDDUMP_PROTECTED_ENVIRONMENTS": "prod, qa",
        "SEEDDUMP_BACKGROUND": "false",  # a boolean
        "SEEDDUMP_LOCK_TIMEOUT": "60",  # a number
        "SEEDDUMP_UNDO": "false",
    }
    made = run(folder, "generatedump", "dev", **env)
    assert made.returncode == 0, made.stderr
    assert list(dumps.glob("dev-seeded-*.dump")), "the dump went to SEEDDUMP_DIR from the environment"

    refused = run(folder, "restoredump", "qa", "--no-input", **env)
    assert refused.returncode == 1 and "protected" in refused.stderr, refused.stderr

    restored = run(folder, "restoredump", "dev", "--no-input", **env)
    assert restored.returncode == 0, restored.stderr
    assert "Finishing in the background" not in restored.stdout  # SEEDDUMP_BACKGROUND=false
    assert "Undo it with" not in restored.stdout  # SEEDDUMP_UNDO=false

    # A project without django.contrib.admin (listdumps is its list of dumps): check has nothing to say.
    checked = run(folder, "check", **env)
    assert checked.returncode == 0 and "System check identified no issues" in checked.stdout, checked.stderr

    # A value of the wrong type is one line from check (and from any command), not a traceback mid-restore.
    checked = run(folder, "check", **{**env, "SEEDDUMP_UNDO": "maybe", "SEEDDUMP_LOCK_TIMEOUT": "a minute"})
    assert checked.returncode == 1
    assert "(seeddump.E003) SEEDDUMP_UNDO in the environment must be true or false, not 'maybe'." in checked.stderr
    assert "(seeddump.E003) SEEDDUMP_LOCK_TIMEOUT in the environment must be a whole number" in checked.stderr
    assert "Traceback" not in checked.stderr


@pytest.mark.parametrize("alias", ["default"])
def test_django_settings_win_over_the_environment(alias: str, tmp_path: Path) -> None:
    seeded(alias)
    mine = tmp_path / "dumps-from-settings"
    folder = project(tmp_path, alias, f'INSTALLED_APPS += ["seeddump"]\nSEEDDUMP_DIR = {str(mine)!r}\n')
    made = run(folder, "generatedump", "dev", SEEDDUMP_DIR=str(tmp_path / "env"), SEEDDUMP_PG_BIN_DIRS=bin_dirs())
    assert made.returncode == 0, made.stderr
    assert list(mine.glob("dev-seeded-*.dump")) and not (tmp_path / "env").exists()


@pytest.mark.parametrize("alias", ["default"])
def test_a_setting_seeddump_cannot_see_is_named_by_check(alias: str, tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        alias,
        """
        import configuration  # the platform's own file, which settings.py reads only in part
        INSTALLED_APPS += ["seeddump"]
        SEEDDUMP_DIRR = "/srv/dumps"  # misspelt
        """,
        **{"configuration.py": 'SEEDDUMP_STORAGE = "dumps"\n'},
    )
    checked = run(folder, "check")
    assert checked.returncode == 0, checked.stderr
    output = checked.stderr
    assert "(seeddump.W005) SEEDDUMP_DIRR is not a seeddump setting; seeddump ignores it." in output
    assert "HINT: Did you mean SEEDDUMP_DIR?" in output
    assert "(seeddump.W004) SEEDDUMP_STORAGE is set in configuration, which Django's settings do not read" in output
    assert "PLUGINS_CONFIG['seeddump'] as 'STORAGE'" in output


NETBOX_STAND_IN = """
# A stand-in for netbox/plugins/__init__.py (NetBox is a project, not a package on PyPI): the parts of its
# PluginConfig that NetBox's settings.py and app loading call.
from django.apps import AppConfig


class PluginConfig(AppConfig):
    default_settings = {}
    required_settings = []
    min_version = None
    max_version = None

    @classmethod
    def validate(cls, user_config, netbox_version):
        for setting in cls.required_settings:
            if setting not in user_config:
                raise RuntimeError(f"missing {setting}")
        for setting, value in cls.default_settings.items():
            user_config.setdefault(setting, value)
"""

# NetBox's settings.py plugin loop, as the platform runs it (netbox/netbox/settings.py, "Plugins").
NETBOX_LOOP = """
import importlib

PLUGINS = ["seeddump"]
PLUGINS_CONFIG = {{"seeddump": {{"DIR": {dumps!r}, "pg_bin_dirs": {bins!r}, "BACKGROUND": False}}}}
for plugin_name in PLUGINS:
    plugin = importlib.import_module(plugin_name)
    plugin_config = plugin.config
    PLUGINS_CONFIG.setdefault(plugin_name, {{}})
    plugin_config.validate(PLUGINS_CONFIG[plugin_name], "4.4.0")
    INSTALLED_APPS.append(f"{{plugin_config.__module__}}.{{plugin_config.__name__}}")
"""


@pytest.mark.parametrize("alias", ["default"])
def test_seeddump_in_a_netbox_style_plugins_list_reads_plugins_config(
    alias: str, tmp_path: Path, caches: list[Path]
) -> None:
    seeded(alias)
    dumps = tmp_path / "netbox-dumps"
    caches.append(dumps)
    bins = [str(p) for p in django_settings.SEEDDUMP_PG_BIN_DIRS]
    folder = project(
        tmp_path,
        alias,
        NETBOX_LOOP.format(dumps=str(dumps), bins=bins),
        **{"netbox/__init__.py": "", "netbox/plugins/__init__.py": NETBOX_STAND_IN},
    )
    made = run(folder, "generatedump", "dev")
    assert made.returncode == 0, made.stderr
    assert list(dumps.glob("dev-seeded-*.dump")), "the dump went to PLUGINS_CONFIG['seeddump']['DIR']"
    restored = run(folder, "restoredump", "dev", "--no-input")
    assert restored.returncode == 0, restored.stderr
    assert "Finishing in the background" not in restored.stdout


def test_without_netbox_seeddump_has_no_plugin_config() -> None:
    """Outside NetBox, ``seeddump.config`` is absent: NetBox's own loader would say so, and nothing else asks."""
    import seeddump

    assert not hasattr(seeddump, "config")
    assert "netbox" not in sys.modules


@pytest.mark.parametrize("alias", ["default"])
def test_misspelt_plugin_options_and_environment_variables_are_named_by_check(alias: str, tmp_path: Path) -> None:
    folder = project(
        tmp_path,
        alias,
        """
        INSTALLED_APPS += ["seeddump"]
        PLUGINS_CONFIG = {"seeddump": {"DIRR": "/srv/dumps", "backgroud": False, "pg_bin_dirs": [], "UNDO": False}}
        """,
    )
    # SEEDDUMP_ENV is init-db.sh's (a .env shared with the database's container); SEEDDUMP_PYTEST_ENV the plugin's.
    env = {
        "SEEDDUMP_SNAPSHOT": "false",
        "SEEDDUMP_ENV": "dev",
        "SEEDDUMP_PYTEST_ENV": "ci",
        "SEEDDUMP_LOCK_TIMEOUT": "9",
    }

    checked = run(folder, "check", **env)

    assert checked.returncode == 0, checked.stderr
    output = checked.stderr
    plugin = (
        "(seeddump.W006) PLUGINS_CONFIG['seeddump'] has {!r}, which is not a seeddump setting; seeddump ignores it."
    )
    assert plugin.format("DIRR") + "\n\tHINT: Did you mean 'DIR'?" in output
    assert plugin.format("backgroud") + "\n\tHINT: Did you mean 'background'?" in output  # as it was written
    assert (
        "(seeddump.W007) The environment variable SEEDDUMP_SNAPSHOT is not a seeddump setting; seeddump ignores it."
        "\n\tHINT: Did you mean SEEDDUMP_SNAPSHOTS?"
    ) in output
    assert output.count("seeddump.W00") == 3, output  # nothing about the names that are read
    assert "Traceback" not in output


@pytest.mark.parametrize("alias", ["default"])
def test_the_first_source_that_has_a_setting_wins(alias: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Django's settings, then PLUGINS_CONFIG["seeddump"] (the name, in lower case, prefixed), then the
    environment: whichever has it first, whatever the value."""
    monkeypatch.setenv("SEEDDUMP_STORAGE_PREFIX", "from-the-environment")
    monkeypatch.setenv("SEEDDUMP_UNDO", "true")
    assert conf.STORAGE_PREFIX == "from-the-environment"
    settings.PLUGINS_CONFIG = {"seeddump": {"storage_prefix": "from-plugins-config", "UNDO": False}}
    assert conf.STORAGE_PREFIX == "from-plugins-config" and conf.UNDO is False
    settings.PLUGINS_CONFIG = {"seeddump": {"storage_prefix": "lower", "STORAGE_PREFIX": "upper"}}
    assert conf.STORAGE_PREFIX == "upper"
    settings.SEEDDUMP_STORAGE_PREFIX = "from-django-settings"
    settings.SEEDDUMP_UNDO = True
    assert conf.STORAGE_PREFIX == "from-django-settings" and conf.UNDO is True


@pytest.mark.parametrize("alias", ["default"])
def test_a_dumps_folder_among_the_installed_packages_is_named_by_check(alias: str, tmp_path: Path) -> None:
    """pretix's way: an application installed from PyPI, its settings (and BASE_DIR) in site-packages."""
    packages = Path(sysconfig.get_paths()["purelib"]).resolve()
    folder = project(tmp_path, alias, f'INSTALLED_APPS += ["seeddump"]\nBASE_DIR = {str(packages / "pretix")!r}\n')

    checked = run(folder, "check")

    assert checked.returncode == 0, checked.stderr
    assert (
        f"(seeddump.W008) The dumps folder {packages / 'pretix' / 'seeds' / 'dumps'} (the default, from BASE_DIR) is "
        f"inside the installed packages' folder {packages}: dumps there are lost with the virtualenv or the next "
        "upgrade.\n\tHINT: Set SEEDDUMP_DIR to a folder of your own outside it"
    ) in checked.stderr

    assert "seeddump.W008" not in run(folder, "check", SEEDDUMP_DIR=str(tmp_path / "dumps")).stderr
    # pip install --user's folder counts too, and a SEEDDUMP_DIR given there is named as such.
    user_site = Path(site.getusersitepackages()).resolve()
    given = run(folder, "check", SEEDDUMP_DIR=str(user_site / "dumps"))
    assert f"(seeddump.W008) The dumps folder {user_site / 'dumps'} (SEEDDUMP_DIR) is inside" in given.stderr
    assert not (packages / "pretix").exists() and not (user_site / "dumps").exists()  # check made nothing
