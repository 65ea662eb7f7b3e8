from django.contrib import admin

from project.reality.models import Agent, RealityNode, Team


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = ["name", "created_at"]


@admin.register(Agent)
class AgentAdmin(admin.ModelAdmin):
    list_display = ["name", "team", "role", "active"]
    list_filter = ["role", "active"]


@admin.register(RealityNode)
class RealityNodeAdmin(admin.ModelAdmin):
    list_display = ["title", "team", "depth", "weight"]
    list_filter = ["depth"]
    raw_id_fields = ["owner", "parent"]
