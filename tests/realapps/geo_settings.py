"""A GeoDjango project on GeoDjango's own engine (django.contrib.gis.db.backends.postgis) with two applications
from PyPI: django-mapbox-baselayer (map layers; a PMTiles set has a polygon and two files in MEDIA_ROOT) and
django-cities-xtd (places; cities, districts and postal codes are points)."""

from tests.realapps.base import *  # noqa: F403
from tests.realapps.base import DATABASES, DJANGO_APPS

assert DATABASES["default"]["ENGINE"] == "django.contrib.gis.db.backends.postgis", DATABASES["default"]["ENGINE"]

INSTALLED_APPS = [*DJANGO_APPS, "django.contrib.gis", "mapbox_baselayer", "cities", "seeddump"]
ROOT_URLCONF = "tests.realapps.geo_urls"
# The admin's pages of both applications read every geometry column (a layer's page: its PMTiles sets, each with
# its polygon in a map widget and its files); the PMTiles list answers with each set's polygon (centroid, extent)
# and its file's size in MEDIA_ROOT.
SEEDDUMP_SMOKE_PAGES = ["/admin/login/"]
SEEDDUMP_SMOKE_LOGIN_PAGES = [
    "/admin/",
    "/admin/mapbox_baselayer/mapbaselayer/",
    "/admin/mapbox_baselayer/mapbaselayer/1/change/",
    "/admin/cities/city/",
    "/admin/cities/postalcode/",
]
SEEDDUMP_SMOKE_API_URLS = ["/map/mapbox-baselayers/", "/map/pmtiles/"]
# Debian 12's GDAL 3.6 is older than Django asks for its protection against malicious spatial references: a
# warning about the machine, said on every command.
SILENCED_SYSTEM_CHECKS = ["gis.W001"]
