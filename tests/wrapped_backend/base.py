"""A backend that wraps Django's PostgreSQL one, as connection-pool and metrics packages do (django-prometheus,
django-db-geventpool, dj-db-conn-pool): PostgreSQL underneath, under another ENGINE path."""

from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    queries_wrapped = 0
