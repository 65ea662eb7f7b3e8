from django.apps import AppConfig


class RealityConfig(AppConfig):
    name = "project.reality"
    label = "reality"
    verbose_name = "Reality (demo)"
    default_auto_field = "django.db.models.BigAutoField"
