"""seeddump as a NetBox plugin: ``PLUGINS = ["seeddump"]`` in NetBox's ``configuration.py``, with seeddump's
settings in ``PLUGINS_CONFIG = {"seeddump": {"DIR": "/opt/netbox/seeds/dumps", ...}}`` (``seeddump.conf`` reads
them there, by their names without the ``SEEDDUMP_`` prefix).

NetBox imports ``seeddump`` and asks it for ``config``; ``seeddump/__init__.py`` answers with the class below,
importing this module only then, so seeddump never needs NetBox anywhere else.
"""

from __future__ import annotations

from netbox.plugins import PluginConfig  # type: ignore[import-not-found]

from seeddump import __version__
from seeddump.apps import SeeddumpConfig


class SeeddumpPluginConfig(PluginConfig):  # type: ignore[misc]
    name = "seeddump"
    verbose_name = SeeddumpConfig.verbose_name
    description = "Versioned pg_dump snapshots of a seeded database: restore a dev or staging database in seconds."
    version = __version__
    base_url = "seeddump"
    default_auto_field = SeeddumpConfig.default_auto_field
    default_settings: dict[str, object] = {}
    required_settings: list[str] = []

    def __init__(self, app_name: str, app_module: object) -> None:
        super().__init__(app_name, app_module)
        SeeddumpConfig.remember_declared()

    def ready(self) -> None:
        super().ready()
        SeeddumpConfig.connect(self)
