from django.apps import AppConfig


class EmblemsConfig(AppConfig):
    """Each demo team's emblem: a small image file under MEDIA_ROOT, as real seeds make files."""

    name = "project.emblems"
    label = "emblems"
    verbose_name = "Emblems (demo media)"
    default_auto_field = "django.db.models.BigAutoField"
