from django.contrib import admin
from django.urls import include, path

from project.reality import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("", include("seeddump.urls")),
    path("api/teams/", views.teams, name="api-teams"),
    path("api/agents/", views.agents, name="api-agents"),
    path("api/nodes/", views.nodes, name="api-nodes"),
    path("api/nodes/<int:node_id>/", views.node, name="api-node"),
]
