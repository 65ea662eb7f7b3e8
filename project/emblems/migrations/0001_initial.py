import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True

    dependencies = [
        ("reality", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="Emblem",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("image", models.FileField(upload_to="emblems/")),
                (
                    "team",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE, related_name="emblem", to="reality.team"
                    ),
                ),
            ],
            options={"db_table": "emblems_emblem", "ordering": ["id"]},
        ),
    ]
