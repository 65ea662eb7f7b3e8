from django.urls import path

from seeddump import views

app_name = "seeddump"
urlpatterns = [
    path("healthz/", views.health, name="health"),
]
