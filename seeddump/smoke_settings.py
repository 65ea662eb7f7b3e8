"""Settings of the web server ``smoketest`` starts: the project's own settings, with these changes:

``smoketest`` runs the server with ``DJANGO_SETTINGS_MODULE=seeddump.smoke_settings`` and, in the
environment variable ``SEEDDUMP_SMOKE_SERVER``, a JSON object naming the project's settings module, the
database alias and the database the smoke test restored. Here the project's settings are imported and
copied, then:

- the alias points at the smoke test's database, never at the developer's own, and MEDIA_ROOT at the smoke
  test's copy of the dump's media, when it has media;
- the alias logs in as the smoke test says (a throwaway member of the database's owner, when seeddump connects
  as another role: the dump's code runs in this server's sessions too);
- the health endpoint is served by a middleware in front of the project's own (no URL include needed);
- the session and CSRF cookies are not ``Secure`` and there is no HTTPS redirect: the server speaks plain
  http on 127.0.0.1, where a browser (or the smoke test's client) never sends a Secure cookie back;
- 127.0.0.1 is an allowed host.
"""

from __future__ import annotations

import json
import os
from importlib import import_module
from typing import Any

_server: dict[str, Any] = json.loads(os.environ["SEEDDUMP_SMOKE_SERVER"])
_project = import_module(_server["settings"])

globals().update({name: getattr(_project, name) for name in dir(_project) if name.isupper()})

DATABASES = {alias: dict(database) for alias, database in _project.DATABASES.items()}
if _server.get("database"):
    DATABASES[_server["alias"]]["NAME"] = _server["database"]
if _server.get("login"):  # a throwaway member of the owner (seeddump.sandbox): the dump's code runs here too
    _login, _alias = _server["login"], DATABASES[_server["alias"]]
    _options = {k: v for k, v in (_alias.get("OPTIONS") or {}).items() if k not in ("assume_role", "options")}
    _alias.update(USER=_login["USER"], PASSWORD=_login["PASSWORD"], OPTIONS=_options)
    if _login.get("options"):
        _options["options"] = _login["options"]

if _server.get("media_root"):  # the dump's files, unpacked for the smoke test: never the developer's own
    MEDIA_ROOT = _server["media_root"]
    _storages = {alias: dict(config) for alias, config in getattr(_project, "STORAGES", {}).items()}
    if "location" in (_storages.get("default", {}).get("OPTIONS") or {}):
        _storages["default"]["OPTIONS"] = {**_storages["default"]["OPTIONS"], "location": MEDIA_ROOT}
        STORAGES = _storages

MIDDLEWARE = ["seeddump.views.SmokeHealthMiddleware", *getattr(_project, "MIDDLEWARE", [])]
SEEDDUMP_SMOKE_HEALTH_PATH = _server["health_path"]

SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
SECURE_SSL_REDIRECT = False

_hosts = list(getattr(_project, "ALLOWED_HOSTS", []))
ALLOWED_HOSTS = _hosts if "*" in _hosts else [*_hosts, "127.0.0.1"]
