from django.db import models


class Team(models.Model):
    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    settings = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        db_table = "reality_team"
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Agent(models.Model):
    class Role(models.TextChoices):
        SCOUT = "scout"
        BUILDER = "builder"
        ARCHIVIST = "archivist"
        LEAD = "lead"

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="agents")
    name = models.CharField(max_length=100)
    email = models.EmailField(unique=True)
    role = models.CharField(max_length=16, choices=Role.choices)
    skills = models.JSONField(default=list)
    bio = models.TextField(blank=True)
    active = models.BooleanField(default=True)
    joined_at = models.DateTimeField()

    class Meta:
        db_table = "reality_agent"
        ordering = ["id"]
        indexes = [models.Index(fields=["team", "role"])]

    def __str__(self) -> str:
        return self.name


class RealityNode(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="nodes")
    owner = models.ForeignKey(Agent, on_delete=models.SET_NULL, null=True, related_name="nodes")
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True, related_name="children")
    title = models.CharField(max_length=200, db_index=True)
    body = models.TextField()
    attributes = models.JSONField(default=dict)
    weight = models.FloatField()
    depth = models.PositiveSmallIntegerField()
    rank = models.PositiveIntegerField(default=0, db_index=True)
    created_at = models.DateTimeField()

    class Meta:
        db_table = "reality_node"
        ordering = ["id"]
        indexes = [models.Index(fields=["team", "depth"])]

    def __str__(self) -> str:
        return self.title
