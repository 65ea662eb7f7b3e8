from django.db import models

from project.reality.models import Team


class Emblem(models.Model):
    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="emblem")
    image = models.FileField(upload_to="emblems/")

    class Meta:
        db_table = "emblems_emblem"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.image.name
