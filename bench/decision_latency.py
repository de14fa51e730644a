"""How fast a decision wakes the run waiting for it (services and shared options: bench/README.md).

    .venv/bin/python bench/decision_latency.py              # ~3 min on 2 cores with SQLite; --quick ~1 min

A waiter blocks; the decider acts once it knows the waiter is blocked (Redis: ``CLIENT LIST``
shows the waiter's named connection in a blocking command; in-process: 1 ms after the waiter
entered ``wait``). Per row, ``--decisions`` (2000; ``--quick``: 300) after ``--warmup``, in µs/ms:

- ``wake``: from sending the wake-up (the ``LPUSH`` call; ``publish`` called; inside
  ``approval_decide``, ``publish`` called right after COMMIT) to the waiter resuming (``BLPOP`` /
  ``wait`` / ``approval_wait`` returning in the waiter). The target's p50 ratio is on this.
- ``return->wake``: from the decider's call *returning* to the waiter resuming. Negative when the
  waiter was already running before the call returned: Redis answers the blocked client first.

Rows (``--rows a,b`` or ``all``): ``floor``, redis-py ``BLPOP`` in one thread woken by ``LPUSH``
from another; ``floor-idle`` (not by default), the same with the decider idle 5 ms first (both
threads asleep, as when a reviewer's click reaches a quiet process); ``channel-memory`` /
``channel-redis``, ``DecisionChannel.publish`` -> ``wait``; ``service-memory`` /
``service-redis``, ``approval_decide`` -> ``approval_wait`` in a waiter thread, real rows;
``service-redis-process``, the waiter in another process (the web decides, a worker waits).

Then each service row's breakdown (decide's transaction, the channel hop, the waiter's re-read,
what ``approval_decide`` does after publishing: notifications, signal) and the pieces it points
at, each timed alone (``--skip-pieces``: not): the waiter's re-read (as written; for reference a
``.values()`` read of a ``Decision``'s columns and the same SQL through a raw cursor) and one
reviewer notification (``notify_reviewers`` as it is; for reference ``async_to_sync(group_send)``,
how it was sent before b013df0, and a bare redis-py ``PUBLISH``).

Target: Redis rows p50 within 3x the floor's p50 and p99 under 5 ms. The service rows also show
their ratio to "floor + one SELECT by key through a raw cursor": the waiter re-reads the row
after every wake-up (the row is the truth), which a bare ``BLPOP`` does not.
"""

from __future__ import annotations

import argparse
import multiprocessing
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import harness  # puts the repository on sys.path

perf = time.perf_counter
WAITER_NAME = "anvia-bench-waiter"
FAKE_ID_BASE = 900_000_000  # raw-channel rows use ids no real approval has
IDLE_BEFORE_PUSH = 0.005
SEGMENTS = (
    "decide: transaction",
    "channel hop (publish -> wait returns)",
    "waiter: re-read row",
    "decide: after publish (notify, signal)",
    "decide called -> approval_wait returns",
)
RAW_ROWS = ("floor", "floor-idle", "channel-memory", "channel-redis")
ALL_ROWS = (*RAW_ROWS, "service-memory", "service-redis", "service-redis-process")
DEFAULT_ROWS = tuple(name for name in ALL_ROWS if name != "floor-idle")


# --- waiting side -----------------------------------------------------------------------------


def stamped(call: Callable[..., Any], *args, **kwargs) -> tuple[float, Any]:
    """``call``'s result and when it returned: run in the waiter thread, it stamps the wake-up."""
    value = call(*args, **kwargs)
    return perf(), value


def until_redis_waiter_blocked(admin, name: str = WAITER_NAME, limit: float = 5.0) -> None:
    deadline = perf() + limit
    while perf() < deadline:
        for client in admin.client_list():
            if client.get("name") == name and "b" in client.get("flags", ""):
                return
        time.sleep(0.0002)
    raise RuntimeError("the waiter never blocked in Redis")


class TimedChannel:
    """Wraps the real channel to stamp publish and wake inside the service path."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.entered = threading.Event()
        self.stamps: dict[str, float] = {}

    def publish(self, approval_id: int, decision: dict | None = None) -> None:
        self.stamps["publish_start"] = perf()
        self.inner.publish(approval_id, decision)
        self.stamps["publish_end"] = perf()

    def wait(self, approval_id: int, timeout: float) -> dict | bool:
        self.entered.set()
        woken = self.inner.wait(approval_id, timeout)
        self.stamps["wake"] = perf()
        return woken


def waiter_process(conn, redis_url: str) -> None:
    """Child process: wait on each approval id sent, send back (resumed, woke, approved)."""
    import django

    django.setup()
    import approvals.services as services
    from approvals.decision_channels import RedisDecisionChannel

    inner = RedisDecisionChannel(redis_url)
    inner.client.connection_pool.connection_kwargs["client_name"] = WAITER_NAME
    timed = TimedChannel(inner)
    services.get_decision_channel = lambda: timed
    conn.send("ready")
    while (approval_id := conn.recv()) is not None:
        decision = services.approval_wait(approval_id=approval_id, timeout=30)
        conn.send((perf(), timed.stamps["wake"], decision is not None and decision.approved))
    from django.db import connections

    connections.close_all()


# --- rows -------------------------------------------------------------------------------------


@dataclass
class Row:
    name: str
    label: str
    redis: bool
    wake: list[float] = field(default_factory=list)
    return_to_wake: list[float] = field(default_factory=list)
    segments: dict[str, list[float]] = field(default_factory=dict)


def measure_raw(name: str, redis_url: str, decisions: int, warmup: int, waiter: ThreadPoolExecutor) -> Row:
    """``floor`` / ``floor-idle``: ``BLPOP`` <- ``LPUSH``; ``channel-*``: a channel's ``wait`` <- ``publish``."""
    import redis

    from approvals.decision_channels import InProcessDecisionChannel, RedisDecisionChannel

    admin = redis.Redis.from_url(redis_url)
    clients = [admin]
    if name.startswith("floor"):
        blocker = redis.Redis.from_url(redis_url, client_name=WAITER_NAME, socket_timeout=10)
        pusher = redis.Redis.from_url(redis_url)
        clients += [blocker, pusher]
        key = f"anvia-bench:floor:{time.time_ns()}"
        label = "redis-py BLPOP <- LPUSH from another thread"
        if name == "floor-idle":
            label += f" ({IDLE_BEFORE_PUSH * 1000:.0f} ms idle first)"

        def wait(i: int):
            return blocker.blpop([key], timeout=5)

        def wake_up(i: int) -> None:
            pusher.lpush(key, "decided")

    else:
        channel = RedisDecisionChannel(redis_url) if name == "channel-redis" else InProcessDecisionChannel()
        if name == "channel-redis":
            channel.client.connection_pool.connection_kwargs["client_name"] = WAITER_NAME
            clients.append(channel.client)
        label = f"{type(channel).__name__} publish -> wait"
        base = FAKE_ID_BASE + time.time_ns() // 1000 % 1000 * 100_000

        def wait(i: int):
            return channel.wait(base + i, 5.0)

        def wake_up(i: int) -> None:
            channel.publish(base + i)

    row = Row(name, label, redis=name != "channel-memory")
    try:
        for i in range(warmup + decisions):
            entered = threading.Event()

            def job(i=i, entered=entered):
                entered.set()
                return stamped(wait, i)

            future = waiter.submit(job)
            entered.wait(5)
            if row.redis:
                until_redis_waiter_blocked(admin)
            else:
                time.sleep(0.001)
            if name == "floor-idle":
                time.sleep(IDLE_BEFORE_PUSH)
            called = perf()
            wake_up(i)
            returned = perf()
            woke, value = future.result(15)
            assert value, f"{name}: the wait timed out"
            if i >= warmup:
                row.wake.append((woke - called) * 1e6)
                row.return_to_wake.append((woke - returned) * 1e6)
    finally:
        for client in clients:
            client.close()
    return row


def pending_approvals(count: int, requester) -> list[int]:
    """Rows as ``approval_request`` writes them (its cost is not what this bench measures)."""
    from django.utils import timezone

    from approvals.models import Approval
    from approvals.services import args_hash

    schema = {"type": "object", "properties": {"order_id": {"type": "string"}, "amount": {"type": "number"}}}
    rows = []
    for i in range(count):
        args = {"amount": 150.0, "order_id": f"A-{i}"}
        rows.append(
            Approval(
                run_id=str(uuid.uuid4()),  # an agent run's id, as the agents app's decision receiver expects
                call_id="call-1",
                agent_name="support",
                requested_by=requester,
                tool_name="refund_order",
                args=args,
                args_hash=args_hash(args),
                input_schema=schema,
                reason=f"Review refund of $150.0 for A-{i}.",
                required_by_rule=True,
                reject_message="Refund was not approved.",
                expires_at=timezone.now() + timedelta(hours=24),
            )
        )
    return [approval.pk for approval in Approval.objects.bulk_create(rows, batch_size=500)]


def measure_service(name: str, redis_url: str, decisions: int, warmup: int, waiter: ThreadPoolExecutor) -> Row:
    import redis
    from django.conf import settings

    import approvals.services as services
    from approvals.decision_channels import InProcessDecisionChannel, RedisDecisionChannel

    kind = "memory" if name.endswith("memory") else "redis"
    in_child = name.endswith("process")
    labels = {
        "service-memory": "approval_decide -> approval_wait, in-process channel",
        "service-redis": "approval_decide -> approval_wait, Redis channel",
        "service-redis-process": "approval_decide -> approval_wait, Redis channel, waiter in another process",
    }
    row = Row(name, labels[name], redis=kind == "redis")
    row.segments = {segment: [] for segment in SEGMENTS}

    admin = redis.Redis.from_url(redis_url)
    settings.ANVIA_DECISION_CHANNEL = kind
    inner = RedisDecisionChannel(redis_url) if kind == "redis" else InProcessDecisionChannel()
    if kind == "redis" and not in_child:
        inner.client.connection_pool.connection_kwargs["client_name"] = WAITER_NAME
    timed = TimedChannel(inner)
    saved = services.get_decision_channel
    services.get_decision_channel = lambda: timed

    child = parent_conn = None
    if in_child:
        parent_conn, child_conn = multiprocessing.Pipe()
        child = multiprocessing.get_context("spawn").Process(target=waiter_process, args=(child_conn, redis_url))
        child.start()
        assert parent_conn.poll(60), "the waiter process did not start"
        assert parent_conn.recv() == "ready"

    requester, reviewer = harness.bench_users()
    try:
        for i, approval_id in enumerate(pending_approvals(warmup + decisions, requester)):
            timed.stamps.clear()
            if in_child:
                parent_conn.send(approval_id)
            else:
                timed.entered.clear()
                future = waiter.submit(stamped, services.approval_wait, approval_id=approval_id, timeout=30)
                timed.entered.wait(5)
            if kind == "redis":
                until_redis_waiter_blocked(admin)
            else:
                time.sleep(0.001)
            called = perf()
            services.approval_decide(approval_id=approval_id, reviewer=reviewer, approved=True, reason="ok")
            returned = perf()
            if in_child:
                assert parent_conn.poll(15), "the waiter process did not answer"
                resumed, woke, approved = parent_conn.recv()
            else:
                resumed, decision = future.result(15)
                woke, approved = timed.stamps["wake"], decision is not None and decision.approved
            assert approved, f"approval {approval_id} was not seen approved"
            if i < warmup:
                continue
            s = timed.stamps
            row.wake.append((resumed - s["publish_start"]) * 1e6)
            row.return_to_wake.append((resumed - returned) * 1e6)
            spans = (
                s["publish_start"] - called,
                woke - s["publish_start"],
                resumed - woke,
                returned - s["publish_end"],
                resumed - called,
            )
            for segment, span in zip(SEGMENTS, spans, strict=True):
                row.segments[segment].append(span * 1e6)
    finally:
        services.get_decision_channel = saved
        if child is not None:
            parent_conn.send(None)
            child.join(10)
        if kind == "redis":
            inner.client.close()
        admin.close()
    return row


RAW_READ = "re-read: the same SQL through a raw cursor"


def measure_pieces(redis_url: str, repeats: int = 500) -> dict[str, list[float]]:
    """The two costs the breakdown points at, each alone: the waiter's re-read and a notification."""
    import redis
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.db import connection

    from approvals.models import Approval
    from approvals.notifications import REVIEWERS_GROUP, approval_summary, notify_reviewers

    requester, _ = harness.bench_users()
    (pk,) = pending_approvals(1, requester)
    approval = Approval.objects.select_related("decided_by", "requested_by").get(pk=pk)
    query = Approval.objects.select_related("decided_by").filter(pk=pk).query
    sql, params = query.sql_with_params()
    publisher = redis.Redis.from_url(redis_url)
    layer = get_channel_layer()
    message = {"type": "approval.created", "approval": approval_summary(approval)}
    payload = layer.serialize(message)

    def raw_read() -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            cursor.fetchone()

    columns = ("status", "expires_at", "decision_reason", "decided_by__username", "args", "edited_args")
    pieces = {
        "re-read: select_related('decided_by').get(pk) (approval_wait)": lambda: Approval.objects.select_related(
            "decided_by"
        ).get(pk=pk),
        "re-read: .values(<Decision's columns>).get() (reference)": lambda: (
            Approval.objects.filter(pk=pk).values(*columns).get()
        ),
        RAW_READ: raw_read,
        "notify_reviewers (as is: group_send on the process's kept loop)": lambda: notify_reviewers(
            "approval.created", approval
        ),
        "async_to_sync(layer.group_send), as before b013df0 (reference)": lambda: async_to_sync(layer.group_send)(
            REVIEWERS_GROUP, message
        ),
        "redis-py PUBLISH of the same message": lambda: publisher.publish(f"bench-{REVIEWERS_GROUP}", payload),
    }
    timings: dict[str, list[float]] = {}
    for label, piece in pieces.items():
        for _ in range(20):
            piece()
        samples = timings[label] = []
        for _ in range(repeats):
            started = perf()
            piece()
            samples.append((perf() - started) * 1e6)
    publisher.close()
    return timings


# --- report -----------------------------------------------------------------------------------


def fmt(us: float) -> str:
    return f"{us / 1000:.2f} ms" if abs(us) >= 1000 else f"{us:.0f} µs"


def report(rows: list[Row], services_line: str, load: str, pieces: dict[str, list[float]]) -> None:
    floor = next(row for row in rows if row.name == "floor")
    floor_p50 = harness.percentile(floor.wake, 50)
    print()
    print(f"Decision wake-up latency. {services_line}. {harness.machine_line()}.")
    print(f"Load average before/after: {load}.")
    print(
        f"Floor (redis-py BLPOP woken by LPUSH, same run): wake p50 {fmt(floor_p50)}, "
        f"p99 {fmt(harness.percentile(floor.wake, 99))}."
    )
    print("Target for Redis rows: wake p50 <= 3x the floor's p50, and p99 < 5 ms (both columns).")
    read_floor = floor_p50 + harness.percentile(pieces[RAW_READ], 50) if pieces else 0.0
    if read_floor:
        print(
            f"Floor + one SELECT by key through a raw cursor (what the service path must do at least): "
            f"{fmt(read_floor)}; service rows show their p50 against it too."
        )
    headers = ["row", "n", "wake p50", "wake p99", "p50 vs floor", "vs floor+SELECT"]
    headers += ["return->wake p50", "p99", "target"]
    table = []
    for row in rows:
        w = harness.summary(row.wake)
        r = harness.summary(row.return_to_wake)
        if row is floor:
            verdict = "(floor)"
        elif not row.redis or row.name == "floor-idle":
            verdict = "-"
        else:
            checks = (("p50 > 3x floor", w["p50"] <= 3 * floor_p50), ("p99 >= 5 ms", max(w["p99"], r["p99"]) < 5000))
            misses = [miss for miss, ok in checks if not ok]
            verdict = "MISSED: " + ", ".join(misses) if misses else "met"
        table.append(
            [
                f"{row.name}: {row.label}",
                str(w["n"]),
                fmt(w["p50"]),
                fmt(w["p99"]),
                f"{w['p50'] / floor_p50:.1f}x",
                f"{w['p50'] / read_floor:.1f}x" if read_floor and row.segments else "",
                fmt(r["p50"]),
                fmt(r["p99"]),
                verdict,
            ]
        )
    harness.print_table(headers, table)

    breakdown = []
    for row in rows:
        for segment, samples in row.segments.items():
            s = harness.summary(samples)
            breakdown.append([row.name, segment, fmt(s["p50"]), fmt(s["p99"])])
    if breakdown:
        print()
        print("Where a service-path decision spends its time:")
        harness.print_table(["row", "segment", "p50", "p99"], breakdown)
    if pieces:
        print()
        print("The pieces alone (one thread, nothing else running in this process):")
        pct = harness.percentile
        table = [[label, str(len(v)), fmt(pct(v, 50)), fmt(pct(v, 99))] for label, v in pieces.items()]
        harness.print_table(["piece", "n", "p50", "p99"], table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--decisions", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--quick", action="store_true", help="300 decisions per row")
    parser.add_argument("--skip-pieces", action="store_true", help="leave out the re-read/notify costs alone")
    harness.add_quiet_arguments(parser)
    parser.add_argument("--rows", default=",".join(DEFAULT_ROWS), help=f"any of: {', '.join(ALL_ROWS)}; or 'all'")
    args = parser.parse_args()
    names = list(ALL_ROWS) if args.rows == "all" else [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = set(names) - set(ALL_ROWS)
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    if "floor" not in names:
        names.insert(0, "floor")
    decisions, warmup = (300, 30) if args.quick else (args.decisions, args.warmup)

    with harness.measured_services(args, "anvia_bench_decisions") as (svc, services_line, load_before):
        from django.db import connections

        waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bench-waiter")
        rows: list[Row] = []
        started = perf()
        try:
            for name in names:
                measure = measure_raw if name in RAW_ROWS else measure_service
                rows.append(row := measure(name, svc.redis_url, decisions, warmup, waiter))
                print(f"  {name}: wake p50 {fmt(harness.percentile(row.wake, 50))} ({perf() - started:.0f} s)")
            pieces = {} if args.skip_pieces else measure_pieces(svc.redis_url)
        finally:
            waiter.submit(connections.close_all).result(5)
            waiter.shutdown()
        report(rows, services_line, f"{load_before} / {harness.load_average()}", pieces)


if __name__ == "__main__":
    main()
