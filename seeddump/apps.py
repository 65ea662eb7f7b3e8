from typing import Any

from django.apps import AppConfig
from django.core import checks
from django.db.models.signals import post_migrate


class SeeddumpConfig(AppConfig):
    name = "seeddump"
    verbose_name = "Seed dumps"
    default_auto_field = "django.db.models.BigAutoField"

    def __init__(self, app_name: str, app_module: Any) -> None:
        super().__init__(app_name, app_module)
        self.remember_declared()

    @staticmethod
    def remember_declared() -> None:
        """Django makes every app config before any app is ready: the settings are still as declared here."""
        from seeddump import codestate

        codestate.remember_declared()

    def ready(self) -> None:
        self.connect(self)

    @staticmethod
    def connect(app_config: AppConfig) -> None:
        """What seeddump's app does when Django is ready; NetBox's plugin config (seeddump.netbox) does it too."""
        from seeddump.checks import (
            check_database_engine,
            check_django_version,
            check_dumps,
            check_setting_names,
            check_settings,
        )
        from seeddump.staleness import warn_stale_dumps

        # sender=self: post_migrate is sent once per app, and this must run once per migrate.
        post_migrate.connect(warn_stale_dumps, sender=app_config, dispatch_uid="seeddump.warn_stale_dumps")
        checks.register(check_django_version, "seeddump", checks.Tags.compatibility)
        checks.register(check_database_engine, "seeddump")
        checks.register(check_dumps, "seeddump")
        checks.register(check_settings, "seeddump")
        checks.register(check_setting_names, "seeddump")
