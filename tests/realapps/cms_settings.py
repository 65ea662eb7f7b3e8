"""A Wagtail site's development settings (Wagtail: about 200 migrations across its applications) that add
django-debug-toolbar, as many projects' development settings do. The toolbar's AppConfig.ready() sets
MIGRATION_MODULES["debug_toolbar"] = None."""

from tests.realapps.base import *  # noqa: F403
from tests.realapps.base import DJANGO_APPS, MIDDLEWARE

INSTALLED_APPS = [
    "wagtail.contrib.forms",
    "wagtail.contrib.redirects",
    "wagtail.contrib.search_promotions",
    "wagtail.contrib.settings",
    "wagtail.embeds",
    "wagtail.sites",
    "wagtail.users",
    "wagtail.snippets",
    "wagtail.documents",
    "wagtail.images",
    "wagtail.search",
    "wagtail.admin",
    "wagtail",
    "modelcluster",
    "taggit",
    "django_filters",
    *DJANGO_APPS,
    "django.contrib.postgres",  # Wagtail's search index on PostgreSQL asks for it (postgres.E005)
    "seeddump",
    "debug_toolbar",  # development only
]
MIDDLEWARE = [
    "debug_toolbar.middleware.DebugToolbarMiddleware",
    *MIDDLEWARE,
    "wagtail.contrib.redirects.middleware.RedirectMiddleware",
]
INTERNAL_IPS = ["127.0.0.1"]
ROOT_URLCONF = "tests.realapps.cms_urls"
WAGTAIL_SITE_NAME = "realapps"
WAGTAILADMIN_BASE_URL = "http://127.0.0.1"
WAGTAILSEARCH_BACKENDS = {"default": {"BACKEND": "wagtail.search.backends.database"}}
SEEDDUMP_SMOKE_PAGES = ["/admin/login/", "/django-admin/login/"]
SEEDDUMP_SMOKE_LOGIN_PAGES = ["/django-admin/", "/admin/", "/admin/images/", "/admin/pages/"]
