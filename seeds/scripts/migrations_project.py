"""A Django project with a long migration history, for the cache of migrated test databases.

    .venv/bin/python seeds/scripts/migrations_project.py FOLDER [--apps 10] [--models 16] [--migrations 22]

Writes FOLDER/manage.py, FOLDER/many/settings.py, FOLDER/pytest.ini, one test module and APPS apps of MODELS
models each. Each app's history is MIGRATIONS migrations: the first makes its models (a foreign key to the
app before's first model, so the graph crosses apps), each later one adds a field or an index, as a project's
history grows (NetBox: about 200 tables and 265 migrations). The migration files are written here, not by
``makemigrations``, so that writing a project of hundreds takes no time; the models match them.
``add_migration`` adds one more to an app (a branch's new migration). The database settings come from
DATABASE_URL (postgres://user@host:port/name or a socket folder as host); SEEDDUMP_DIR is the dumps folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SETTINGS = """\
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "migrations-project"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "seeddump",
    *[f"app{{number:03d}}" for number in range({apps})],
]
TEST_RUNNER = "seeddump.testrunner.DiscoverRunner"

url = urlsplit(os.environ["DATABASE_URL"])
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": url.path.rsplit("/", 1)[-1],
        "USER": unquote(url.username or ""),
        "PASSWORD": unquote(url.password or ""),
        "HOST": unquote(url.hostname or "") or unquote(url.path.rsplit("/", 1)[0]),  # or a socket folder
        "PORT": str(url.port or ""),
    }}
}}
SEEDDUMP_DIR = os.environ.get("SEEDDUMP_DIR", str(BASE_DIR / "seeds" / "dumps"))
# The team's shared storage (SEEDDUMP_STORAGE=shared): a folder here, a bucket in a real project.
STORAGES = {{
    "default": {{"BACKEND": "django.core.files.storage.FileSystemStorage"}},
    "staticfiles": {{"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}},
    "shared": {{
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {{"location": os.environ.get("SHARED_DUMPS", str(BASE_DIR / "shared"))}},
    }},
}}
"""

TESTS = """\
import pytest
from django.db import connection
from django.test import TestCase

from app000.models import Model000


@pytest.mark.django_db
def test_the_empty_database_is_migrated():
    print("TESTDB", connection.settings_dict["NAME"])
    Model000.objects.create(name="one")
    assert Model000.objects.count() == 1


class RunnerTests(TestCase):
    def test_in_djangos_runner(self):
        print("TESTDB", connection.settings_dict["NAME"])
        Model000.objects.create(name="two")
        self.assertEqual(Model000.objects.count(), 1)


class MoreRunnerTests(TestCase):  # a second class: manage.py test --parallel gives each worker one
    def test_in_another_worker(self):
        print("TESTDB", connection.settings_dict["NAME"])
        self.assertEqual(Model000.objects.count(), 0)
"""


def _model_name(number: int) -> str:
    return f"Model{number:03d}"


def _added_field(step: int, models: int) -> tuple[str, str]:
    """The model and field the app's migration number ``step`` (2 and on) adds."""
    return _model_name((step - 2) % models), f"added_{step:04d}"


def _before(app: int, number: int) -> str | None:
    """The model that model ``number`` of ``app`` has a foreign key to: the one before it in the app, and for
    the first, the first of the app before (relations make Django render related models at every step)."""
    if number > 0:
        return f"app{app:03d}.{_model_name(number - 1)}"
    return f"app{app - 1:03d}.Model000" if app > 0 else None


def write_app(root: Path, app: int, models: int, migrations: int) -> None:
    label = f"app{app:03d}"
    package = root / label
    (package / "migrations").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / "migrations" / "__init__.py").write_text("")
    fields: dict[str, list[str]] = {_model_name(m): [] for m in range(models)}
    for step in range(2, migrations + 1):
        model, field = _added_field(step, models)
        fields[model].append(field)
    lines = ["from django.db import models", ""]
    for number in range(models):
        name = _model_name(number)
        lines += ["", f"class {name}(models.Model):", "    name = models.CharField(max_length=100, db_index=True)"]
        lines.append("    created = models.DateTimeField(auto_now_add=True)")
        if before := _before(app, number):
            lines.append(f"    before = models.ForeignKey('{before}', null=True, on_delete=models.SET_NULL)")
        lines += [f"    {field} = models.IntegerField(default=0)" for field in fields[name]]
    (package / "models.py").write_text("\n".join(lines) + "\n")
    creates = []
    for number in range(models):
        before = _before(app, number)
        foreign = (
            f"                ('before', models.ForeignKey(null=True, on_delete=django.db.models.deletion.SET_NULL, "
            f"to='{before.lower()}')),\n"
            if before
            else ""
        )
        creates.append(
            f"        migrations.CreateModel(\n"
            f"            name='{_model_name(number)}',\n"
            f"            fields=[\n"
            f"                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, "
            f"verbose_name='ID')),\n"
            f"                ('name', models.CharField(db_index=True, max_length=100)),\n"
            f"                ('created', models.DateTimeField(auto_now_add=True)),\n"
            f"{foreign}"
            f"            ],\n"
            f"        ),\n"
        )
    depends = f"('app{app - 1:03d}', '0001_initial')" if app > 0 else ""
    (package / "migrations" / "0001_initial.py").write_text(
        "import django.db.models.deletion\nfrom django.db import migrations, models\n\n\n"
        f"class Migration(migrations.Migration):\n    initial = True\n    dependencies = [{depends}]\n"
        f"    operations = [\n{''.join(creates)}    ]\n"
    )
    previous = "0001_initial"
    for step in range(2, migrations + 1):
        model, field = _added_field(step, models)
        name = f"{step:04d}_{model.lower()}_{field}"
        write_migration(package, name, previous, model, field)
        previous = name


def write_migration(package: Path, name: str, previous: str, model: str, field: str) -> None:
    """A migration that adds ``field``; every third also fills it in Python (a data migration: Django renders
    the models' state for it, as for the data migrations of a real history)."""
    data = int(name[:4]) % 3 == 0
    run_python = "        migrations.RunPython(fill, migrations.RunPython.noop),\n" if data else ""
    fill = (
        f"def fill(apps, schema_editor):\n"
        f"    apps.get_model('{package.name}', '{model}').objects.update({field}=1)\n\n\n"
        if data
        else ""
    )
    (package / "migrations" / f"{name}.py").write_text(
        "from django.db import migrations, models\n\n\n"
        f"{fill}"
        "class Migration(migrations.Migration):\n"
        f"    dependencies = [('{package.name}', '{previous}')]\n"
        "    operations = [\n"
        f"        migrations.AddField(model_name='{model.lower()}', name='{field}', "
        "field=models.IntegerField(default=0)),\n"
        f"{run_python}"
        "    ]\n"
    )


def add_migration(root: Path, label: str, field: str) -> str:
    """Adds to app ``label`` a migration (after its last) that adds ``field`` to its first model, and the field
    to the model; returns the migration's name."""
    package = root / label
    names = sorted(p.stem for p in (package / "migrations").glob("[0-9]*.py"))
    step = int(names[-1][:4]) + 1
    name = f"{step:04d}_{field}"
    write_migration(package, name, names[-1], _model_name(0), field)
    models_py = package / "models.py"
    first = "class Model000(models.Model):\n"
    text = models_py.read_text().replace(first, f"{first}    {field} = models.IntegerField(default=0)\n")
    models_py.write_text(text)
    return name


def write_project(root: Path, apps: int, models: int, migrations: int) -> None:
    (root / "many").mkdir(parents=True, exist_ok=True)
    (root / "many" / "__init__.py").write_text("")
    (root / "many" / "settings.py").write_text(SETTINGS.format(apps=apps))
    (root / "manage.py").write_text(
        "import os\nimport sys\n\nif __name__ == '__main__':\n"
        "    os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'many.settings')\n"
        "    from django.core.management import execute_from_command_line\n\n"
        "    execute_from_command_line(sys.argv)\n"
    )
    (root / "pytest.ini").write_text("[pytest]\nDJANGO_SETTINGS_MODULE = many.settings\npython_files = test_*.py\n")
    (root / "tests").mkdir(exist_ok=True)
    (root / "tests" / "__init__.py").write_text("")
    (root / "tests" / "test_many.py").write_text(TESTS)
    for app in range(apps):
        write_app(root, app, models, migrations)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--apps", type=int, default=10)
    parser.add_argument("--models", type=int, default=16)
    parser.add_argument("--migrations", type=int, default=22, help="per app")
    args = parser.parse_args()
    write_project(args.folder, args.apps, args.models, args.migrations)


if __name__ == "__main__":
    main()
