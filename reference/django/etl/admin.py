"""Admin: jobs with Run Now, runs with state and a progress bar, the dead-letter page."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from etl import views
from etl.contract import InvalidRequest
from etl.models import DataSource, Job, OutboxMessage, ProcessedEvent, Run, RunState
from etl.publisher import request_run
from etl.replay import new_run_with_current_settings

STATE_COLOURS = {
    RunState.QUEUED: "#777", RunState.RUNNING: "#2b6cb0", RunState.RETRYING: "#b7791f",
    RunState.FAILED: "#c53030", RunState.DEAD_LETTERED: "#822727", RunState.REPLAYED: "#6b46c1",
    RunState.COMPLETED: "#2f855a",
}


@admin.register(DataSource)
class DataSourceAdmin(admin.ModelAdmin):
    list_display = ("name", "source_type", "host", "port", "database", "username", "password_kind")


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ("name", "data_source", "source_table", "dest_table", "load_type", "last_sync_value",
                    "enabled")
    list_filter = ("load_type", "enabled", "data_source")
    actions = ["run_now"]

    @admin.action(description="Run now")
    def run_now(self, request: HttpRequest, queryset: QuerySet[Job]) -> None:
        for job in queryset:
            try:
                run = request_run(job)
            except InvalidRequest as exc:
                self.message_user(request, f"{job}: {exc}", messages.ERROR)
                continue
            self.message_user(request, f"{job}: {run.run_id} queued")

    def save_model(self, request: HttpRequest, obj: Job, form: Any, change: bool) -> None:
        if "last_sync_value" in form.changed_data:
            # Set by hand (e.g. to reload from an earlier point): the next committed watermark wins.
            obj.last_sync_key = None
        super().save_model(request, obj, form, change)


def state_badge(run: Run) -> str:
    colour = STATE_COLOURS.get(RunState(run.state), "#777")
    return format_html('<span style="color:#fff;background:{};padding:1px 6px;border-radius:3px">{}</span>',
                       colour, run.get_state_display())


def progress_bar(run: Run) -> str:
    """<progress> of run.fraction (rows_extracted / rows_expected; 1 when committing or done)."""
    if run.fraction is None:
        return format_html('<span title="no row count yet">{}</span>', "-")
    return format_html('<progress class="etl-progress" value="{}" max="1">{}%</progress> {}%',
                       f"{run.fraction:.4f}", f"{run.fraction * 100:.0f}", f"{run.fraction * 100:.0f}")


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("pk", "run_id", "job", "origin", "state_column", "progress_column", "rows_loaded",
                    "attempt", "error_column", "requested_at")
    list_filter = ("state", "origin", "job")
    search_fields = ("run_id", "error_message")
    actions = ["new_run_action"]
    readonly_fields = [f.name for f in Run._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs come from Run Now or from the worker's events, never typed in

    @admin.display(description="state", ordering="state")
    def state_column(self, run: Run) -> str:
        return state_badge(run)

    @admin.display(description="progress")
    def progress_column(self, run: Run) -> str:
        return progress_bar(run)

    @admin.display(description="error")
    def error_column(self, run: Run) -> str:
        if not run.error_type:
            return ""
        return format_html("<b>{}</b>: {}", run.error_type, run.error_message[:200])

    @admin.action(description="New run with current settings")
    def new_run_action(self, request: HttpRequest, queryset: QuerySet[Run]) -> None:
        for run in queryset:
            try:
                new = new_run_with_current_settings(run)
            except (ValueError, InvalidRequest) as exc:
                self.message_user(request, str(exc), messages.ERROR)
                continue
            self.message_user(request, f"{new.run_id} queued (new run of {run.job})")

    def get_urls(self) -> list[URLPattern]:
        dead_letters = self.admin_site.admin_view(views.dead_letters)
        return [path("dead-letters/", dead_letters, name="etl_run_dead_letters"), *super().get_urls()]

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> Any:
        extra = {"dead_letters_url": reverse("admin:etl_run_dead_letters"),
                 "dead_letter_count": Run.objects.filter(state=RunState.DEAD_LETTERED).count()}
        return super().changelist_view(request, {**extra, **(extra_context or {})})


@admin.register(ProcessedEvent)
class ProcessedEventAdmin(admin.ModelAdmin):
    list_display = ("processed_at", "event_type", "run", "attempt", "seq", "applied", "note")
    list_filter = ("event_type", "applied")
    readonly_fields = [f.name for f in ProcessedEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("pk", "run", "topic", "created_at", "published_at", "attempts", "last_error")
    readonly_fields = [f.name for f in OutboxMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
