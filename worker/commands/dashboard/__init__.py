"""`etl-worker dashboard`: server.py serves static/ and model.py's JSON at /api/runs."""

from worker.commands.dashboard.server import Dashboard, serve_dashboard

__all__ = ["Dashboard", "serve_dashboard"]
