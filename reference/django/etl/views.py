"""The dead-letter page (mounted in the admin by RunAdmin.get_urls, staff only)."""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from etl.contract import InvalidRequest
from etl.models import Run, RunState
from etl.replay import ReplayResult, new_run_with_current_settings, replay


def dead_letters(request: HttpRequest) -> HttpResponse:
    result: ReplayResult | None = None
    if request.method == "POST":
        pk = request.POST.get("run", "")
        if not pk.isdigit():
            raise Http404("no such run")
        run = get_object_or_404(Run, pk=int(pk), state=RunState.DEAD_LETTERED)
        if request.POST.get("action") == "replay":
            result = replay(run)
            _report_replay(request, run, result)
        elif request.POST.get("action") == "new_run":
            try:
                new = new_run_with_current_settings(run)
                messages.success(request, f"{new.run_id} queued: a new run of {run.job}")
            except (ValueError, InvalidRequest) as exc:
                messages.error(request, str(exc))
    runs = Run.objects.filter(state=RunState.DEAD_LETTERED).select_related("job").order_by("-last_event_at")
    context = {"runs": runs, "replay_result": result, "title": "Dead-lettered runs",
               "has_permission": True, "site_header": "ETL"}
    return render(request, "etl/dead_letters.html", context)


def _report_replay(request: HttpRequest, run: Run, result: ReplayResult) -> None:
    if not result.ran:
        messages.info(request, f"Replay is not configured here; run: {result.command}")
    elif result.replayed:
        messages.success(request, f"{run.run_id} replayed; its state follows the worker's events")
    else:
        # The hold subscription may not have the dead letter yet, or the publish failed: the output says.
        messages.error(request, f"replay of {run.run_id} did not replay it (exit {result.returncode})")
