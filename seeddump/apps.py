from django.apps import AppConfig


class SeeddumpConfig(AppConfig):
    name = "seeddump"
    verbose_name = "Seed dumps"
    default_auto_field = "django.db.models.BigAutoField"
