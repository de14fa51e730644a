"""Settings, all from the environment (django-environ). See README "Configuration"."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")

# Off unless asked for: a debug page lists URL patterns and settings to whoever hits an error.
DEBUG = env.bool("DJANGO_DEBUG", default=False)
# The fallback key only exists while debugging; with DEBUG off a key must be given (`make run`
# generates one into var/secret_key on first use).
SECRET_KEY = env.str("DJANGO_SECRET_KEY", default="")
if not SECRET_KEY:
    if not DEBUG:
        raise environ.ImproperlyConfigured(
            "Set DJANGO_SECRET_KEY (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(50))'`), "
            "or DJANGO_DEBUG=true for local development."
        )
    SECRET_KEY = "django-insecure-local-development-only"  # noqa: S105
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "channels",
    "approvals",
    "agents",
    "shop",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "anvia_project.urls"
ASGI_APPLICATION = "anvia_project.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DATABASE_CONN_MAX_AGE", default=0)
# Celery workers keep their connections this long (anvia_project/celery.py); 0: one per task.
ANVIA_WORKER_CONN_MAX_AGE = env.int("ANVIA_WORKER_CONN_MAX_AGE", default=300)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql" and env.bool("DATABASE_POOL", default=False):
    # The ASGI server runs each request's sync code on a thread of its own, so a persistent
    # connection (CONN_MAX_AGE) is never reused there: every request connected anew. A pool is
    # (README "Benchmarks"). Celery workers keep per-thread connections instead (celery.py): a run
    # blocked on a decision holds its thread's connection, which would drain a bounded pool.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": env.int("DATABASE_POOL_MIN_SIZE", default=2),
        "max_size": env.int("DATABASE_POOL_MAX_SIZE", default=20),
        "timeout": 10,
    }
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: wait for a lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 20, "transaction_mode": "IMMEDIATE"})
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the app folders while developing; `collectstatic` fills STATIC_ROOT for production.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Redis: Celery's broker, the Channels layer and the approval decision channel.
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379/0")
# redis-py caps a pool at 100 connections; every blocked approval waiter holds one.
REDIS_MAX_CONNECTIONS = env.int("REDIS_MAX_CONNECTIONS", default=2000)

# "redis" in production; "memory" for a single process with no Redis (Studio).
ANVIA_CHANNEL_LAYER = env.str("ANVIA_CHANNEL_LAYER", default="redis")
if ANVIA_CHANNEL_LAYER == "memory":
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
else:
    CHANNEL_LAYERS = {
        "default": {
            # The pub/sub layer: lower latency per message and faster fan-out to many reviewer sockets.
            "BACKEND": "channels_redis.pubsub.RedisPubSubChannelLayer",
            "CONFIG": {"hosts": [{"address": REDIS_URL, "max_connections": REDIS_MAX_CONNECTIONS}]},
        }
    }

# The chat's rate limit counts here, shared by every web process.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "anvia",
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_RESULT_BACKEND = None
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_SEND_TASK_EVENTS = True
CELERY_TASK_SEND_SENT_EVENT = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_TASK_ROUTES = {
    # The sweeps must not wait behind a backlog of chats on the agents queue.
    "agents.tasks.recover_orphaned_runs": {"queue": "default"},
    "agents.tasks.requeue_stale_runs": {"queue": "default"},
    "agents.tasks.*": {"queue": "agents"},
}

# The agent framework and the approval runtime.
ANVIA_MODEL = env.str("ANVIA_MODEL", default="offline")
OPENAI_BASE_URL = env.str("OPENAI_BASE_URL", default="")
OPENAI_API_KEY = env.str("OPENAI_API_KEY", default="")
ANVIA_MODEL_TIMEOUT_SECONDS = env.float("ANVIA_MODEL_TIMEOUT_SECONDS", default=60.0)
ANVIA_MODEL_MAX_RETRIES = env.int("ANVIA_MODEL_MAX_RETRIES", default=2)
# Sent with every request that offers tools: "auto", "none", "required" or a tool's name. An agent's
# own tool_choice wins. llama.cpp's server shows the model its tools only when this is sent.
ANVIA_MODEL_TOOL_CHOICE = env.str("ANVIA_MODEL_TOOL_CHOICE", default="auto")
# Passed through to the server when set (unset: the server's defaults).
ANVIA_MODEL_TEMPERATURE = env.float("ANVIA_MODEL_TEMPERATURE", default=None)
ANVIA_MODEL_SEED = env.int("ANVIA_MODEL_SEED", default=None)
ANVIA_MODEL_MAX_TOKENS = env.int("ANVIA_MODEL_MAX_TOKENS", default=None)
# The answer appears in the chat as the model writes it; false: one plain request per model call.
ANVIA_MODEL_STREAMING = env.bool("ANVIA_MODEL_STREAMING", default=True)
# The offline demo model streams word by word, this many seconds apart (0: all at once).
ANVIA_OFFLINE_WORD_DELAY_SECONDS = env.float("ANVIA_OFFLINE_WORD_DELAY_SECONDS", default=0.04)
# The agents the app can run, as dotted paths to `anvia.Agent` objects.
ANVIA_AGENTS = env.list("ANVIA_AGENTS", default=["agents.support.support_agent"])
# "redis" in production; "memory" for a single process (Studio, some tests).
ANVIA_DECISION_CHANNEL = env.str("ANVIA_DECISION_CHANNEL", default="redis")
# Decision wake-up keys are "<prefix>:approval:<id>": give each app sharing one Redis its own prefix.
ANVIA_REDIS_KEY_PREFIX = env.str("ANVIA_REDIS_KEY_PREFIX", default="anvia")
ANVIA_APPROVAL_TTL_HOURS = env.float("ANVIA_APPROVAL_TTL_HOURS", default=24.0)
ANVIA_APPROVAL_BLOCK_SECONDS = env.float("ANVIA_APPROVAL_BLOCK_SECONDS", default=30.0)
# Per worker process, how many runs may block on a decision at once; the rest suspend at once,
# so the other threads of the agents pool stay free for new chats.
ANVIA_MAX_BLOCKED_RUNS = env.int("ANVIA_MAX_BLOCKED_RUNS", default=8)
# A worker holds each run it works on under a lease, renewed by a heartbeat thread while the model
# or a tool runs; a lease not renewed for ANVIA_RUN_LEASE_SECONDS means the worker died or stalled,
# and the orphan sweep (beat, every ANVIA_RUN_SWEEP_SECONDS) hands the run to another worker:
# a dead worker's run resumes within lease + sweep (12 s) of its death (README "Agent runs").
ANVIA_RUN_LEASE_SECONDS = env.float("ANVIA_RUN_LEASE_SECONDS", default=10.0)
ANVIA_RUN_HEARTBEAT_SECONDS = env.float("ANVIA_RUN_HEARTBEAT_SECONDS", default=3.0)
ANVIA_RUN_SWEEP_SECONDS = env.float("ANVIA_RUN_SWEEP_SECONDS", default=2.0)
if ANVIA_RUN_HEARTBEAT_SECONDS * 2 > ANVIA_RUN_LEASE_SECONDS:
    raise environ.ImproperlyConfigured(
        "ANVIA_RUN_HEARTBEAT_SECONDS must be at most half of ANVIA_RUN_LEASE_SECONDS, "
        "so one late heartbeat does not hand a live worker's run to another."
    )
# A run whose workers stopped this many times without a clean end fails; its pending approvals are cancelled.
ANVIA_RUN_MAX_ATTEMPTS = env.int("ANVIA_RUN_MAX_ATTEMPTS", default=5)
# A run still queued this long after it was posted is queued again (its message may have been lost).
ANVIA_RUN_QUEUED_RETRY_SECONDS = env.float("ANVIA_RUN_QUEUED_RETRY_SECONDS", default=120.0)
# Past this many pending approvals asked for by one user, a protected call is not put to reviewers:
# the model is told so instead.
ANVIA_APPROVAL_MAX_PENDING_PER_USER = env.int("ANVIA_APPROVAL_MAX_PENDING_PER_USER", default=20)

# Telling reviewers who do not have the queue open (approvals/notifications.py): email through
# Django's email backend (EMAIL_URL: consolemail:// prints them, smtp+tls://user:pass@host:587 sends),
# links to ANVIA_PUBLIC_URL, and optionally a Slack-compatible incoming webhook.
vars().update(env.email_url("EMAIL_URL", default="consolemail://"))
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Anvia <anvia@localhost>")
ANVIA_PUBLIC_URL = env.str("ANVIA_PUBLIC_URL", default="http://127.0.0.1:8000").rstrip("/")
ANVIA_SLACK_WEBHOOK_URL = env.str("ANVIA_SLACK_WEBHOOK_URL", default="")
# Email / webhook reviewers who do not have the queue open (Celery tasks). Studio turns this off:
# one process, no Celery, and its reviewer is the developer at the page.
ANVIA_REVIEWER_NOTIFICATIONS = env.bool("ANVIA_REVIEWER_NOTIFICATIONS", default=True)
ANVIA_WEBHOOK_TIMEOUT_SECONDS = env.float("ANVIA_WEBHOOK_TIMEOUT_SECONDS", default=5.0)

CELERY_BEAT_SCHEDULE = {
    "expire-overdue-approvals": {"task": "approvals.expire_overdue", "schedule": 60.0},
    # A tool's escalate_after is met within this much.
    "escalate-overdue-approvals": {"task": "approvals.escalate_overdue", "schedule": 30.0},
    "recover-orphaned-runs": {"task": "agents.tasks.recover_orphaned_runs", "schedule": ANVIA_RUN_SWEEP_SECONDS},
    "requeue-stale-runs": {"task": "agents.tasks.requeue_stale_runs", "schedule": 60.0},
}

# Limits on what one customer can ask of the workers (README "Configuration").
ANVIA_CHAT_MESSAGES_PER_MINUTE = env.int("ANVIA_CHAT_MESSAGES_PER_MINUTE", default=10)
ANVIA_API_MAX_BODY_BYTES = env.int("ANVIA_API_MAX_BODY_BYTES", default=256 * 1024)
# How often an open websocket re-checks its session (and a reviewer's permission) as a safety net:
# logout, and changes to a user's rights (permissions, groups, account), reach its sockets at once.
ANVIA_SOCKET_RECHECK_SECONDS = env.float("ANVIA_SOCKET_RECHECK_SECONDS", default=60.0)

# A task blocked on an approval is not acknowledged; Redis must not redeliver it meanwhile. A socket
# timeout (far above kombu's 1 s BRPOP) so no broker read waits forever on a dead connection -
# including kombu's after-fork close of an inherited connection in a forked process (a test's live
# server hung there in CI).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": int(max(3600, ANVIA_APPROVAL_BLOCK_SECONDS * 4)),
    "socket_timeout": 30,
    "socket_connect_timeout": 5,
}
# When the broker connection drops (Redis restarting), runs in flight go on: a run blocked on a
# decision keeps waiting, its lease (not the broker) keeps it to one worker. Celery 6 would cancel
# them by default. (Why the worker itself survives: anvia_project/redis_broker.py.)
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.TokenAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # JSON only, bounded in size and depth: no body a client sends can answer 500.
    "DEFAULT_PARSER_CLASSES": ["anvia_project.untrusted_json.JSONParser"],
    # The domain's errors (anvia_project.errors.ApplicationError) answer in one shape, everywhere.
    "EXCEPTION_HANDLER": "anvia_project.errors.api_exception_handler",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Anvia for Django",
    "DESCRIPTION": "Human approval for AI agent tool calls.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI and Redoc from this app's static files, not a CDN (drf-spectacular-sidecar).
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"daphne": {"level": "WARNING"}},
}
