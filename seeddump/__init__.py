"""seeddump: versioned pg_dump snapshots of a seeded Django database."""

__version__ = "0.1.0"


def __getattr__(name: str) -> object:
    """``seeddump.config``: NetBox's way into a plugin (PLUGINS = ["seeddump"]); only where NetBox is installed."""
    if name == "config":
        try:
            from seeddump.netbox import SeeddumpPluginConfig
        except ImportError as exc:
            raise AttributeError(f"seeddump.config is NetBox's plugin config; NetBox is not here ({exc})") from None
        return SeeddumpPluginConfig
    raise AttributeError(f"module 'seeddump' has no attribute {name!r}")
