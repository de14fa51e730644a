"""The customer chat (``/chat/``): the conversation list and one conversation's page.

The page works without JavaScript: the form posts here and the page is rendered again from the
database. ``static/js/chat.js`` then makes it live (posting through the API, following the run
over the websocket) without changing what a reload shows.
"""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince
from django.views.decorators.http import require_http_methods, require_POST

from agents.models import Conversation
from agents.registry import get_agent
from agents.selectors import (
    RUN_STATUS_TEXT,
    conversation_get,
    conversation_list,
    conversation_status,
    conversation_turns,
    run_error_visible_to,
)
from agents.services import MAX_MESSAGE_CHARS, conversation_create, conversation_post_message
from agents.throttles import PostingTooFast, message_posting_wait
from anvia_project.errors import ApplicationError

LIST_LIMIT = 200


@login_required
@require_http_methods(["GET"])
def conversation_index(request: HttpRequest) -> HttpResponse:
    conversations = conversation_list(user=request.user)
    shown = [
        (conversation, *conversation_status(conversation), _ago(conversation.last_activity))
        for conversation in conversations[:LIST_LIMIT]
    ]
    return render(request, "agents/conversation_list.html", {"conversations": shown, "total": conversations.count()})


@login_required
@require_POST
def conversation_new(request: HttpRequest) -> HttpResponse:
    conversation = conversation_create(user=request.user)
    return redirect("chat:detail", conversation_id=conversation.pk)


@login_required
@require_http_methods(["GET", "POST"])
def conversation_detail(request: HttpRequest, conversation_id: int) -> HttpResponse:
    try:
        conversation = conversation_get(user=request.user, conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        raise Http404("No such conversation.") from None
    if request.method == "POST":
        content = request.POST.get("content", "")
        wait = message_posting_wait(request)
        if wait is not None:
            too_fast = PostingTooFast(wait)
            response = _render_detail(request, conversation, content=content, error=str(too_fast.detail), status=429)
            response["Retry-After"] = str(too_fast.wait)
            return response
        try:
            conversation_post_message(conversation=conversation, content=content)
        except ApplicationError as refused:
            return _render_detail(
                request, conversation, content=content, error=str(refused), status=refused.status_code
            )
        return redirect(reverse("chat:detail", args=[conversation.pk]) + "#chat-form")
    return _render_detail(request, conversation)


def _render_detail(
    request: HttpRequest, conversation: Conversation, *, content: str = "", error: str = "", status: int = 200
) -> HttpResponse:
    turns = conversation_turns(conversation=conversation)
    context = {
        "conversation": conversation,
        "turns": turns,
        "model_name": _model_name(conversation.agent_name),
        "content": content,
        "error": error,
        "max_chars": MAX_MESSAGE_CHARS,
        "max_chars_text": f"{MAX_MESSAGE_CHARS:,}",
        "working": any(not turn.finished for turn in turns),
        "show_run_errors": run_error_visible_to(request.user),
        "status_texts": {str(status): text for status, text in RUN_STATUS_TEXT.items()},
    }
    return render(request, "agents/conversation_detail.html", context, status=status)


def _ago(moment) -> str:
    if timezone.now() - moment < timedelta(minutes=1):
        return "just now"
    return f"{timesince(moment)} ago"


def _model_name(agent_name: str) -> str:
    try:
        return get_agent(agent_name).model.name
    except Exception:  # a misconfigured model must not take the history down with it
        return ""
