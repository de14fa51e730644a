"""The conversations and runs REST API. Thin: parse, look up the caller's own rows, call a service.

Another user's conversation or run answers 404, exactly like one that does not exist. A 400 names
the field, as DRF does: ``{"content": ["The message is empty."]}``. Every other error body has
``detail``, a sentence for people.
"""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiResponse,
    extend_schema,
    extend_schema_field,
    extend_schema_view,
)
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from agents.models import AgentRun, Conversation, Message, RunEvent
from agents.selectors import (
    conversation_get,
    conversation_list,
    run_answer,
    run_error_visible_to,
    run_get,
    timeline_item,
)
from agents.services import MAX_MESSAGE_CHARS, conversation_create, conversation_post_message
from agents.throttles import MessagePostingThrottle, PostingTooFast
from anvia_project.errors import ErrorSerializer

# ---------------------------------------------------------------------------------------------
# Serializers
# ---------------------------------------------------------------------------------------------


# The approvals API already has a "status" enum used by several components; a second "status"
# enum makes drf-spectacular's enum naming warn. Wrapped in allOf, the run's enum stays inline
# (and documented) instead of being named globally.
@extend_schema_field({"allOf": [{"type": "string", "enum": list(AgentRun.Status.values)}]})
class RunStatusField(serializers.CharField):
    pass


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = ["id", "title", "agent_name", "created_at", "updated_at"]
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer):
    run_id = serializers.UUIDField(read_only=True, allow_null=True, help_text="The run this message asked or answers.")

    class Meta:
        model = Message
        fields = ["id", "role", "content", "run_id", "created_at"]
        read_only_fields = fields


class ConversationDetailSerializer(ConversationSerializer):
    messages = MessageSerializer(
        many=True, read_only=True, help_text="The customer's messages and the agent's answers, oldest first."
    )

    class Meta(ConversationSerializer.Meta):
        fields = [*ConversationSerializer.Meta.fields, "messages"]
        read_only_fields = fields


class ConversationCreateSerializer(serializers.Serializer):
    title = serializers.CharField(
        required=False, allow_blank=True, max_length=200, help_text="Optional; the first message names it otherwise."
    )


class PostMessageSerializer(serializers.Serializer):
    # Emptiness and length are the service's rules (one message for the page and the API), so
    # the field only insists on a string here.
    content = serializers.CharField(
        allow_blank=True,
        trim_whitespace=False,
        help_text=f"What the customer says: 1 to {MAX_MESSAGE_CHARS} characters, not only spaces.",
    )


class RunQueuedSerializer(serializers.Serializer):
    run_id = serializers.UUIDField(help_text="Follow it at /api/runs/{run_id}/ or on the conversation's websocket.")
    status = RunStatusField(help_text="Always `queued` here.")


class RunEventSerializer(serializers.ModelSerializer):
    data = serializers.DictField(read_only=True, help_text="The framework's event data, as recorded.")
    kind = serializers.SerializerMethodField(help_text="How the chat shows it; null for bookkeeping it hides.")
    text = serializers.SerializerMethodField(help_text="The event in plain words, as the chat shows it.")
    key = serializers.SerializerMethodField(
        help_text="Events with the same non-empty key are one line (a resumed run repeats its pending calls): "
        "show the first."
    )

    class Meta:
        model = RunEvent
        fields = ["type", "data", "kind", "text", "key", "created_at"]
        read_only_fields = fields

    def get_kind(self, event: RunEvent) -> str | None:
        item = timeline_item(event.type, event.data)
        return item.kind if item else None

    def get_text(self, event: RunEvent) -> str | None:
        item = timeline_item(event.type, event.data)
        return item.text if item else None

    def get_key(self, event: RunEvent) -> str:
        item = timeline_item(event.type, event.data)
        return item.key if item else ""


class RunSerializer(serializers.ModelSerializer):
    conversation_id = serializers.IntegerField(read_only=True)
    status = RunStatusField(read_only=True, help_text="Where the run is; `succeeded` and `failed` are final.")
    error = serializers.SerializerMethodField(
        help_text="Technical detail of a failure, for staff only (customers read `answer`); empty otherwise."
    )
    answer = serializers.SerializerMethodField(
        help_text="The agent's answer once the run finished (on failure, the explanation the customer sees)."
    )
    events = RunEventSerializer(many=True, read_only=True, help_text="What the run did, oldest first.")

    class Meta:
        model = AgentRun
        fields = [
            "id",
            "conversation_id",
            "agent_name",
            "status",
            "error",
            "answer",
            "created_at",
            "started_at",
            "suspended_at",
            "finished_at",
            "events",
        ]
        read_only_fields = fields

    def get_error(self, run: AgentRun) -> str:
        request = self.context.get("request")
        return run.error if request is not None and run_error_visible_to(request.user) else ""

    def get_answer(self, run: AgentRun) -> str | None:
        return run_answer(run)


class MessageContentErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(required=False, help_text="The body is not valid JSON.")
    content = serializers.ListField(child=serializers.CharField(), required=False)


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def _conversation_or_404(request: Request, conversation_id: int) -> Conversation:
    try:
        return conversation_get(user=request.user, conversation_id=conversation_id)
    except Conversation.DoesNotExist:
        raise NotFound(f"Conversation #{conversation_id} does not exist.") from None


FORBIDDEN = OpenApiResponse(ErrorSerializer, description="Not signed in.")
CONVERSATION_NOT_FOUND = OpenApiResponse(ErrorSerializer, description="No conversation of yours has this id.")


@extend_schema_view(
    get=extend_schema(
        operation_id="conversations_list",
        summary="List your conversations",
        description="Your conversations, the most recently active first, paginated.",
        responses={200: ConversationSerializer(many=True), 403: FORBIDDEN},
        tags=["conversations"],
    ),
    post=extend_schema(
        operation_id="conversations_create",
        summary="Start a conversation",
        description="A new, empty conversation with the support agent.",
        request=ConversationCreateSerializer,
        responses={
            201: ConversationSerializer,
            400: OpenApiResponse(description="`title` is too long or not a string; the body names it."),
            403: FORBIDDEN,
        },
        tags=["conversations"],
    ),
)
class ConversationListView(generics.ListAPIView):
    serializer_class = ConversationSerializer

    def get_queryset(self):
        return conversation_list(user=self.request.user)

    def post(self, request: Request) -> Response:
        body = ConversationCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        conversation = conversation_create(user=request.user, title=body.validated_data.get("title", ""))
        return Response(ConversationSerializer(conversation).data, status=status.HTTP_201_CREATED)


@extend_schema_view(
    get=extend_schema(
        operation_id="conversations_retrieve",
        summary="Read a conversation",
        description="One of your conversations with its messages.",
        responses={200: ConversationDetailSerializer, 403: FORBIDDEN, 404: CONVERSATION_NOT_FOUND},
        tags=["conversations"],
    )
)
class ConversationDetailView(APIView):
    def get(self, request: Request, pk: int) -> Response:
        return Response(ConversationDetailSerializer(_conversation_or_404(request, pk)).data)


class ConversationBusyErrorSerializer(ErrorSerializer):
    run_id = serializers.UUIDField(help_text="The run still open in this conversation.")


class ConversationMessagesView(APIView):
    throttle_classes = [MessagePostingThrottle]

    def throttled(self, request: Request, wait: float | None) -> None:
        raise PostingTooFast(wait)

    @extend_schema(
        operation_id="conversations_messages_create",
        summary="Send a message",
        description=(
            "Saves the message and queues an agent run to answer it. Follow the run at `/api/runs/{run_id}/`, "
            "or live on the websocket `/ws/conversations/{id}/`."
        ),
        request=PostMessageSerializer,
        responses={
            202: RunQueuedSerializer,
            400: OpenApiResponse(MessageContentErrorSerializer, description="`content` is missing, empty or too long."),
            403: FORBIDDEN,
            404: CONVERSATION_NOT_FOUND,
            409: OpenApiResponse(
                ConversationBusyErrorSerializer,
                description="The conversation's last run has not finished (queued, running, waiting or suspended).",
            ),
            413: OpenApiResponse(ErrorSerializer, description="The body is larger than the API accepts."),
            415: OpenApiResponse(ErrorSerializer, description="The body is not JSON."),
            429: OpenApiResponse(
                ErrorSerializer,
                description="Too many messages this minute; the `Retry-After` header says when to try again.",
            ),
        },
        examples=[
            OpenApiExample("Ask for a refund", value={"content": "refund order A-1001, $150"}, request_only=True),
            OpenApiExample(
                "Queued",
                value={"run_id": "0b4c6f0e-8a53-4d7e-9a55-2f1f0d7c9b11", "status": "queued"},
                response_only=True,
                status_codes=["202"],
            ),
            OpenApiExample(
                "Empty", value={"content": ["The message is empty."]}, response_only=True, status_codes=["400"]
            ),
        ],
        tags=["conversations"],
    )
    def post(self, request: Request, pk: int) -> Response:
        conversation = _conversation_or_404(request, pk)
        body = PostMessageSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        run = conversation_post_message(conversation=conversation, content=body.validated_data["content"])
        return Response({"run_id": str(run.pk), "status": run.status}, status=status.HTTP_202_ACCEPTED)


@extend_schema_view(
    get=extend_schema(
        operation_id="runs_retrieve",
        summary="Read a run",
        description="One of your agent runs: its status, timestamps, answer and events, oldest first.",
        responses={
            200: RunSerializer,
            403: FORBIDDEN,
            404: OpenApiResponse(ErrorSerializer, description="No run of yours has this id."),
        },
        tags=["runs"],
    )
)
class RunDetailView(APIView):
    def get(self, request: Request, pk) -> Response:
        try:
            run = run_get(user=request.user, run_id=pk)
        except AgentRun.DoesNotExist:
            raise NotFound(f"Run {pk} does not exist.") from None
        return Response(RunSerializer(run, context={"request": request}).data)
