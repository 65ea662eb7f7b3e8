"""Settings of the seeddump demo project.

Everything comes from the environment or a ``.env`` file beside manage.py (django-environ). Without
DATABASE_URL the project starts an embedded PostgreSQL server with its data in ``.pgdata/``.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

DEBUG = env.bool("DEBUG", default=True)
SECRET_KEY = env.str("SECRET_KEY", default="insecure-demo-key-change-me-in-any-real-deployment")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "seeddump",
    "project.reality",
    "project.emblems",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "project.urls"
WSGI_APPLICATION = "project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

if "DATABASE_URL" in env:
    DATABASES = {"default": env.db("DATABASE_URL")}
    SEEDDUMP_PG_BIN_DIRS = env.list("SEEDDUMP_PG_BIN_DIRS", default=[])
else:
    from project import embedded

    _default, _bin_dirs = embedded.database(
        embedded.data_dir(BASE_DIR), env.str("EMBEDDED_PG_DB", default="seeddump_demo")
    )
    DATABASES = {"default": _default}
    # The embedded server's own pg_dump/pg_restore match its version; search them first.
    SEEDDUMP_PG_BIN_DIRS = env.list("SEEDDUMP_PG_BIN_DIRS", default=[]) + _bin_dirs

# The demo's seed writes each team's emblem here; generatedump archives it beside the dump (SEEDDUMP_MEDIA).
MEDIA_ROOT = env.path("MEDIA_ROOT", default=BASE_DIR / "media")
MEDIA_URL = "media/"
SEEDDUMP_MEDIA = env.bool("SEEDDUMP_MEDIA", default=True)

SEEDDUMP_DIR = env.path("SEEDDUMP_DIR", default=BASE_DIR / "seeds" / "dumps")
SEEDDUMP_PROTECTED_ENVIRONMENTS = env.str("SEEDDUMP_PROTECTED_ENVIRONMENTS", default="prod,production")
if "SEEDDUMP_RESTORE_JOBS" in env:
    SEEDDUMP_RESTORE_JOBS = env.str("SEEDDUMP_RESTORE_JOBS")  # checked by seeddump (seeddump.E002)
if "SEEDDUMP_DUMP_COMPRESSION" in env:
    SEEDDUMP_DUMP_COMPRESSION = env.str("SEEDDUMP_DUMP_COMPRESSION")
if "SEEDDUMP_VERSION" in env:
    SEEDDUMP_VERSION = env.str("SEEDDUMP_VERSION")
SEEDDUMP_BACKGROUND = env.bool("SEEDDUMP_BACKGROUND", default=True)
SEEDDUMP_OWNER = env.str("SEEDDUMP_OWNER", default="") or None
SEEDDUMP_PROTECTED_DATABASES = env.list("SEEDDUMP_PROTECTED_DATABASES", default=[])
SEEDDUMP_SIGNING_KEY = env.str("SEEDDUMP_SIGNING_KEY", default="") or None
SEEDDUMP_TRUST_DUMPS = env.bool("SEEDDUMP_TRUST_DUMPS", default=False)
if "SEEDDUMP_STORAGE_TIMEOUT" in env:
    SEEDDUMP_STORAGE_TIMEOUT = env.float("SEEDDUMP_STORAGE_TIMEOUT")
if "SEEDDUMP_LOCK_TIMEOUT" in env:
    SEEDDUMP_LOCK_TIMEOUT = env.int("SEEDDUMP_LOCK_TIMEOUT")
SEEDDUMP_READY_COPIES = env.bool("SEEDDUMP_READY_COPIES", default=True)
if "SEEDDUMP_CLONES" in env:  # unset: clones when the server shows it can make them
    SEEDDUMP_CLONES = env.bool("SEEDDUMP_CLONES")
if "SEEDDUMP_CACHE_MAX_SIZE" in env:
    SEEDDUMP_CACHE_MAX_SIZE = env.int("SEEDDUMP_CACHE_MAX_SIZE")
if "SEEDDUMP_MIN_FREE_DISK" in env:  # bytes, or "none": not checked
    _free = env.str("SEEDDUMP_MIN_FREE_DISK")
    SEEDDUMP_MIN_FREE_DISK = None if _free.lower() == "none" else int(_free)
SEEDDUMP_SMOKE_API_URLS = env.list("SEEDDUMP_SMOKE_API_URLS", default=["/api/teams/", "/api/agents/", "/api/nodes/"])
for _name in ("SEEDDUMP_SMOKE_PAGES", "SEEDDUMP_SMOKE_LOGIN_PAGES", "SEEDDUMP_SMOKE_IGNORE_TABLES"):
    if _name in env:
        globals()[_name] = env.list(_name, default=[])
if "SEEDDUMP_SMOKE_HEALTH_URL" in env:
    SEEDDUMP_SMOKE_HEALTH_URL = env.str("SEEDDUMP_SMOKE_HEALTH_URL")
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=False)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
