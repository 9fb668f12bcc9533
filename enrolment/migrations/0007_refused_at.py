from django.db import migrations, models

from enrolment.migration_steps import wait_for_locks_briefly


class Migration(migrations.Migration):
    dependencies = [
        ("enrolment", "0006_refusals_remembered"),
    ]

    operations = [
        wait_for_locks_briefly(),
        migrations.AddField(
            model_name="addressthrottle",
            name="refused_at",
            field=models.FloatField(blank=True, null=True),
        ),
    ]
