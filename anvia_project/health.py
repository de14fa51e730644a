"""``/healthz``: is the database, Redis and a worker answering?"""

from __future__ import annotations

from django.http import JsonResponse


def healthz(request):
    return JsonResponse({"status": "todo"})
