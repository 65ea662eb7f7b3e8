from django.contrib import admin

from project.emblems.models import Emblem


@admin.register(Emblem)
class EmblemAdmin(admin.ModelAdmin):
    list_display = ["team", "image"]
