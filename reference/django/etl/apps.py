from __future__ import annotations

from django.apps import AppConfig


class EtlConfig(AppConfig):
    name = "etl"
    verbose_name = "ETL"
    default_auto_field = "django.db.models.BigAutoField"
