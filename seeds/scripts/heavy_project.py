"""A Django project with a heavy start-up, made by the repository for the start-up benchmark.

    .venv/bin/python seeds/scripts/heavy_project.py FOLDER [--apps 160] [--models 14]

Writes FOLDER/manage.py, FOLDER/heavy/settings.py and APPS apps of MODELS models each (a dozen fields, a
foreign key to the model before, a ModelAdmin with list filters and search), with their initial migrations
written by ``makemigrations``. Like a large real project (NetBox has about 200 tables), ``manage.py help``
spends its seconds in ``django.setup()`` importing models and admin modules. The database settings come
from DATABASE_URL (postgres://user@host:port/name or a socket folder as host); seeddump and django-pgclone
are installed apps (pgclone only when importable).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import textwrap
from pathlib import Path

SETTINGS = """\
import importlib.util
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "heavy-benchmark-project"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "heavy.urls"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "seeddump",
    *[f"app{{number:03d}}" for number in range({apps})],
]
if importlib.util.find_spec("pgclone"):
    INSTALLED_APPS.append("pgclone")
    PGCLONE_STORAGE_LOCATION = str(BASE_DIR / "pgclone") + "/"
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
TEMPLATES = [
    {{
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {{"context_processors": [
            "django.template.context_processors.request",
            "django.contrib.auth.context_processors.auth",
            "django.contrib.messages.context_processors.messages",
        ]}},
    }}
]
_url = urlsplit(os.environ.get("DATABASE_URL", "postgres://postgres@localhost/heavy"))
DATABASES = {{
    "default": {{
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _url.path.rsplit("/", 1)[-1],
        "USER": unquote(_url.username or "postgres"),
        "HOST": unquote(_url.hostname or "") or unquote(_url.path.rsplit("/", 1)[0]),
        "PORT": str(_url.port or ""),
    }}
}}
SEEDDUMP_DIR = os.environ.get("SEEDDUMP_DIR", str(BASE_DIR / "dumps"))
"""

MANAGE = """\
#!/usr/bin/env python
import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "heavy.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
"""

URLS = """\
from django.contrib import admin
from django.urls import path

urlpatterns = [path("admin/", admin.site.urls)]
"""


def model_source(app: str, number: int) -> str:
    previous = f'models.ForeignKey("Thing{number - 1:02d}", models.CASCADE, null=True, blank=True)' if number else None
    fields = [
        "name = models.CharField(max_length=200, db_index=True)",
        "slug = models.SlugField(max_length=200, unique=True)",
        "description = models.TextField(blank=True)",
        "status = models.CharField(max_length=20, choices=[('a', 'Active'), ('p', 'Planned'), ('r', 'Retired')])",
        "weight = models.DecimalField(max_digits=8, decimal_places=2, default=0)",
        "rank = models.IntegerField(default=0)",
        "enabled = models.BooleanField(default=True)",
        "data = models.JSONField(default=dict, blank=True)",
        "created = models.DateTimeField(auto_now_add=True)",
        "updated = models.DateTimeField(auto_now=True)",
        "address = models.GenericIPAddressField(null=True, blank=True)",
        "uuid = models.UUIDField(null=True, blank=True)",
    ]
    if previous:
        fields.append(f"parent = {previous}")
    body = "\n    ".join(fields)
    return (
        f"class Thing{number:02d}(models.Model):\n    {body}\n\n"
        f"    class Meta:\n        ordering = ['name']\n        verbose_name = '{app} thing {number}'\n\n"
        f"    def __str__(self):\n        return self.name\n\n\n"
    )


def admin_source(number: int) -> str:
    return (
        f"@admin.register(models.Thing{number:02d})\n"
        f"class Thing{number:02d}Admin(admin.ModelAdmin):\n"
        "    list_display = ['name', 'status', 'rank', 'enabled']\n"
        "    list_filter = ['status', 'enabled']\n"
        "    search_fields = ['name', 'slug', 'description']\n\n\n"
    )


def make(folder: Path, apps: int, models_per_app: int) -> None:
    (folder / "heavy").mkdir(parents=True, exist_ok=True)
    (folder / "dumps").mkdir(exist_ok=True)
    (folder / "manage.py").write_text(MANAGE)
    (folder / "heavy" / "__init__.py").write_text("")
    (folder / "heavy" / "settings.py").write_text(SETTINGS.format(apps=apps))
    (folder / "heavy" / "urls.py").write_text(URLS)
    for index in range(apps):
        app = f"app{index:03d}"
        package = folder / app
        (package / "migrations").mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        (package / "migrations" / "__init__.py").write_text("")
        (package / "apps.py").write_text(
            f"from django.apps import AppConfig\n\n\nclass Config(AppConfig):\n    name = '{app}'\n"
        )
        (package / "models.py").write_text(
            "from django.db import models\n\n\n" + "".join(model_source(app, n) for n in range(models_per_app))
        )
        (package / "admin.py").write_text(
            "from django.contrib import admin\n\nfrom . import models\n\n\n"
            + "".join(admin_source(n) for n in range(models_per_app))
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=textwrap.dedent(__doc__ or ""))
    parser.add_argument("folder", type=Path)
    parser.add_argument("--apps", type=int, default=160)
    parser.add_argument("--models", type=int, default=14)
    args = parser.parse_args()
    make(args.folder, args.apps, args.models)
    subprocess.run([sys.executable, "manage.py", "makemigrations", "-v0"], cwd=args.folder, check=True, env=None)


if __name__ == "__main__":
    main()
