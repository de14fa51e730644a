"""How many approvals can wait at once on one worker host, and how fast they all resume.

    .venv/bin/python bench/pending_capacity.py --n 100 1000     # default: 100, 1000, 10000

For each N: N customers each ask "refund order B-xxxxx, $150" against their own $200 order, so
every run reaches ``refund_order`` over $100 and waits for a reviewer. ``--workers`` processes of
``celery -A anvia_project worker -Q agents,default -P threads -c CONCURRENCY`` serve them (2 x 16:
threads, so a blocked run costs a thread, not a process; 16, so the 8 blocking permits
(``ANVIA_MAX_BLOCKED_RUNS``) leave 8 threads serving - with permits >= threads every thread
blocks; two processes, as a run is ~30-45 ms of GIL-bound Python). Once all N approvals are
pending and all N runs waiting or suspended, a reviewer approves them all from this process
(``approval_decide`` in ``--decide-threads`` threads) and the bench waits until every run
succeeded. Printed per N, beside the floor (``bench.noop``, an empty Celery task through the
same workers: ``harness.py``):

- worker peak RSS (each worker's process tree, sampled every 0.2 s) - floor: the same workers idle;
- time to N pending (first post -> all approvals pending, all runs waiting/suspended) and to
  drain (first decision -> all runs succeeded) - floor: N empty tasks at their burst rate;
- decided -> refund p50/p99 (``Approval.decided_at`` -> ``Refund.created_at``) - floor: an empty
  task's sequential round trip;
- exactly once: N refunds, distinct idempotency keys, one refund per order, N succeeded runs,
  one ``executed`` event per approval, one ``tool_result`` per run; ``AgentRun.attempts``.

With ``REDIS_URL`` the bench empties the ``agents`` and ``default`` queues there: give it a Redis
no other workers use. SQLite (no ``DATABASE_URL``) has one writer: expect it to limit. Scratch
PostgreSQL database: ``anvia_bench_capacity``. ``--recover-every S`` sends
``recover_orphaned_runs`` every S seconds as celery beat would. Each N is bounded by
``--size-timeout`` (600 s from its first post): past it the size aborts, saying how far it got.

Target: 10,000 pending at once with worker memory under 1 GB and every run resumed exactly once.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import harness  # puts the repository on sys.path
from harness import Floor, Sampler, Usage, mb, ms, percentile, secs

GB = 1024**3


@contextlib.contextmanager
def beat_emulator(every: float) -> Iterator[None]:
    """Sends ``recover_orphaned_runs`` every ``every`` seconds, as celery beat does (0: never)."""
    from agents.tasks import recover_orphaned_runs

    stop = threading.Event()

    def send() -> None:
        while not stop.wait(every):
            recover_orphaned_runs.delay()

    thread = threading.Thread(target=send, name="beat", daemon=True)
    if every > 0:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=5)


@dataclass
class SizeResult:
    n: int
    aborted: str = ""
    idle_rss: int = 0
    peak_rss: int = 0
    peak_threads: int = 0
    peak_redis_clients: int = 0
    post_seconds: float = 0.0
    pending_seconds: float = 0.0
    blocked_at_pending: int = 0
    decide_seconds: float = 0.0
    drain_seconds: float = 0.0
    latency_ms: list[float] = field(default_factory=list)
    executed_latency_ms: list[float] = field(default_factory=list)
    checks: dict[str, tuple[bool, str]] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    floor: Floor | None = None
    pending_usage: Usage = field(default_factory=Usage)
    drain_usage: Usage = field(default_factory=Usage)
    worker_errors: list[str] = field(default_factory=list)
    recovered: int = 0
    skipped: int = 0
    duplicates: int = 0  # refunds, tool results or 'executed' events beyond one per run
    finished: int = 0

    @property
    def exactly_once(self) -> bool:
        return bool(self.checks) and all(ok for ok, _ in self.checks.values())


def run_size(n: int, args: argparse.Namespace, services: harness.Services, workers: harness.Workers) -> SizeResult:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connections
    from django.db.models import Count

    from agents.models import AgentRun, RunEvent
    from approvals.models import Approval, ApprovalEvent
    from approvals.services import approval_decide
    from shop.models import Refund

    result = SizeResult(n)
    connections.close_all()
    call_command("flush", verbosity=0, interactive=False)
    harness.empty_broker(services)
    reviewer = get_user_model().objects.create_superuser("bench-reviewer", "reviewer@example.com", None)
    conversation_ids = harness.create_customers(n, prefix="B")
    sampler = None
    try:
        workers.start()
        result.floor = harness.measure_floor(workers, services.redis_url)
        sampler = Sampler(workers, services.redis_url)
        with sampler, beat_emulator(args.recover_every):
            result.idle_rss = sampler.last_rss
            limit = time.monotonic() + args.size_timeout

            def timed_wait(predicate, started: float, mark) -> tuple[bool, str, float, Usage]:
                """Wait for ``predicate``: done, progress, seconds since ``started`` (0 if not done), usage."""
                done, progress = harness.wait_for(predicate, deadline=limit)
                return done, progress, time.perf_counter() - started if done else 0.0, sampler.since(mark)

            waiting_statuses = [AgentRun.Status.WAITING_FOR_APPROVAL, AgentRun.Status.SUSPENDED]

            # Phase 1: post N messages; wait for N pending approvals and N waiting/suspended runs.
            started = time.perf_counter()
            mark = sampler.mark()
            result.post_seconds = harness.post_messages(
                conversation_ids, lambda number: f"Please refund order {number}, $150", args.post_threads, limit
            )

            def all_pending() -> tuple[bool, str]:
                pending = Approval.objects.filter(status=Approval.Status.PENDING).count()
                waiting = AgentRun.objects.filter(status__in=waiting_statuses).count()
                failed = AgentRun.objects.filter(status=AgentRun.Status.FAILED).count()
                return pending == n and waiting == n, f"{pending} pending, {waiting} waiting, {failed} failed"

            done, progress, result.pending_seconds, result.pending_usage = timed_wait(all_pending, started, mark)
            if not done:
                result.aborted = f"not all pending after {args.size_timeout:.0f} s ({progress})"
                return result
            result.blocked_at_pending = AgentRun.objects.filter(status=AgentRun.Status.WAITING_FOR_APPROVAL).count()

            # Phase 2: approve them all (bulk, from this process); wait for N succeeded runs.
            approval_ids = list(Approval.objects.filter(status=Approval.Status.PENDING).values_list("pk", flat=True))
            started = time.perf_counter()
            mark = sampler.mark()

            def decide(approval_id: int) -> None:
                if time.monotonic() > limit:
                    return  # past the size's bound: the drain check below reports the abort
                approval_decide(approval_id=approval_id, reviewer=reviewer, approved=True, reason="bench")

            harness.in_threads(approval_ids, args.decide_threads, decide)
            result.decide_seconds = time.perf_counter() - started

            def all_succeeded() -> tuple[bool, str]:
                counts = dict(AgentRun.objects.values_list("status").annotate(c=Count("pk")).values_list("status", "c"))
                return counts.get(AgentRun.Status.SUCCEEDED, 0) == n, json.dumps(counts)

            done, progress, result.drain_seconds, result.drain_usage = timed_wait(all_succeeded, started, mark)
            if not done:
                result.aborted = f"not all succeeded {args.size_timeout:.0f} s after the first post ({progress})"
            time.sleep(0.5)  # a duplicate resume, if any, would show in the checks below

        # Decision -> tool executed.
        refunds = dict(Refund.objects.values_list("idempotency_key", "created_at"))
        for run_id, call_id, decided_at, executed_at in Approval.objects.values_list(
            "run_id", "call_id", "decided_at", "executed_at"
        ):
            made = refunds.get(f"{run_id}:{call_id}")
            if made and decided_at:
                result.latency_ms.append((made - decided_at).total_seconds() * 1000)
            if executed_at and decided_at:
                result.executed_latency_ms.append((executed_at - decided_at).total_seconds() * 1000)

        # Exactly once.
        keys = list(Refund.objects.values_list("idempotency_key", flat=True))
        per_order = collections.Counter(Refund.objects.values_list("order_id", flat=True))
        statuses = collections.Counter(AgentRun.objects.values_list("status", flat=True))
        executed = collections.Counter(
            ApprovalEvent.objects.filter(kind=ApprovalEvent.Kind.EXECUTED).values_list("approval_id", flat=True)
        )
        tool_results = collections.Counter(RunEvent.objects.filter(type="tool_result").values_list("run_id", flat=True))
        approved = Approval.objects.filter(status=Approval.Status.APPROVED).count()
        result.attempts = dict(sorted(collections.Counter(AgentRun.objects.values_list("attempts", flat=True)).items()))
        once_each = (per_order, executed, tool_results)
        result.duplicates = len(keys) - len(set(keys)) + sum(c - 1 for counts in once_each for c in counts.values())
        result.finished = statuses.get("succeeded", 0)

        def one_each(counts: collections.Counter, what: str) -> tuple[bool, str]:
            most = max(counts.values(), default=0)
            return len(counts) == n and set(counts.values()) == {1}, f"{len(counts)} {what}, max {most}"

        result.checks = {
            "refunds == N": (len(keys) == n, f"{len(keys)}"),
            "distinct idempotency keys == N": (len(set(keys)) == n, f"{len(set(keys))}"),
            "one refund per order": one_each(per_order, "orders"),
            "succeeded runs == N": (result.finished == n, json.dumps(dict(statuses))),
            "approvals approved == N": (approved == n, f"{approved}"),
            "one 'executed' event per approval": one_each(executed, "approvals"),
            "one tool_result per run": one_each(tool_results, "runs"),
        }
        return result
    finally:
        if sampler is not None:
            result.peak_rss = sampler.peak_rss
            result.peak_threads = sampler.peak_threads
            result.peak_redis_clients = sampler.peak_redis_clients
        workers.stop()
        result.worker_errors = workers.errors()
        result.recovered, result.skipped = recovery_counts(workers)
        harness.empty_broker(services)


def report(results: list[SizeResult], args: argparse.Namespace) -> None:
    rows = []
    for r in results:

        def add(figure: str, measured: str, floor: str = "", note: str = "", n: int = r.n) -> None:
            rows.append([str(n), figure, measured, floor, note])

        if (f := r.floor) is None:
            add("aborted", r.aborted)
            continue
        add("floor: empty task", f"sequential p50 / p99 {f.round_trip()}", f.rate(), f.cpu_note())
        threads = f"{args.workers} proc, peak {r.peak_threads} threads, {r.peak_redis_clients} Redis clients"
        add("worker peak RSS", mb(r.peak_rss), f"{mb(r.idle_rss)} idle after start", threads)
        if r.pending_seconds:
            note = f"{r.n / r.pending_seconds:.0f} runs/s; posting {secs(r.post_seconds)}; "
            note += f"{r.blocked_at_pending} still blocked in a thread; {r.pending_usage.per(r.n)}"
            add("time to N pending", secs(r.pending_seconds), secs(r.n / f.per_second), note)
        if r.drain_seconds:
            note = f"{r.n / r.drain_seconds:.0f} resumes/s; deciding took {secs(r.decide_seconds)} "
            note += f"({r.n / max(r.decide_seconds, 1e-9):.0f}/s, {args.decide_threads} threads); "
            add("time to drain", secs(r.drain_seconds), secs(r.n / f.per_second), note + r.drain_usage.per(r.n))
        if r.latency_ms:
            measured = f"{ms(percentile(r.latency_ms, 50))} / {ms(percentile(r.latency_ms, 99))}"
            note = f"max {ms(max(r.latency_ms))}"
            if r.executed_latency_ms:
                note += f"; -> executed_at p50 {ms(percentile(r.executed_latency_ms, 50))}"
            add("decided -> refund p50 / p99", measured, f.round_trip(), note)
        if r.checks:
            if r.exactly_once:
                verdict = "yes"
            elif r.aborted and not r.duplicates:
                verdict = f"incomplete: {r.finished} of {r.n} succeeded, none twice"
            else:
                verdict = f"NO ({r.duplicates} duplicates): " + ", ".join(
                    k for k, (ok, _) in r.checks.items() if not ok
                )
            attempts = "attempts " + ", ".join(f"{k}: {v}" for k, v in r.attempts.items())
            add(
                "resumed exactly once",
                verdict,
                "",
                f"{attempts}; recovery re-queued {r.recovered}, {r.skipped} skipped",
            )
        if r.aborted:
            add("ABORTED", r.aborted)
    print()
    harness.print_table(["N", "figure", "measured", "floor (empty Celery task, same workers)", "note"], rows)
    for r in results:
        if r.checks and not r.exactly_once:
            print(f"\nN={r.n} checks:")
            for name, (ok, detail) in r.checks.items():
                print(f"  {'ok ' if ok else 'BAD'} {name}: {detail}")
        if r.worker_errors:
            print(f"\nN={r.n}: the workers logged {len(r.worker_errors)} error lines, first ones:")
            for line in r.worker_errors[:10]:
                print("  " + line)
    target = "\nTarget (10,000 pending, worker RSS < 1 GB, every run resumed exactly once):"
    if (biggest := next((r for r in results if r.n >= 10_000), None)) is None:
        print(f"{target} N=10000 not run.")
    else:
        met = not biggest.aborted and biggest.exactly_once and biggest.peak_rss < GB
        aborted = f", aborted: {biggest.aborted}" if biggest.aborted else ""
        once = "yes" if biggest.exactly_once else "no"
        print(f"{target} {'MET' if met else 'NOT MET'} - peak RSS {mb(biggest.peak_rss)}, exactly once {once}{aborted}")


def recovery_counts(workers: harness.Workers) -> tuple[int, int]:
    """(runs re-queued by the recovery task, run tasks that found nothing to do), from the logs."""
    recovered = skipped = 0
    for _, line in workers.log_lines():
        if "runs recovered count=" in line:
            recovered += int(line.split("runs recovered count=")[1].split()[0])
        elif "run skipped run=" in line:
            skipped += 1
    return recovered, skipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 10_000], help="sizes to run")
    parser.add_argument("--size-timeout", type=float, default=600.0, help="seconds per size, from its first post")
    parser.add_argument("--post-threads", type=int, default=4)
    parser.add_argument("--decide-threads", type=int, default=4)
    parser.add_argument(
        "--recover-every",
        type=float,
        default=0.0,
        metavar="S",
        help="send agents.tasks.recover_orphaned_runs every S s, as beat does (production: 30; default: off)",
    )
    harness.add_worker_arguments(parser)
    args = parser.parse_args()
    results: list[SizeResult] = []
    with harness.worker_host(args, "anvia_bench_capacity", "pending capacity") as (services, workers):
        for n in args.n:
            print(f"\nN={n}: setting up...", flush=True)
            try:
                result = run_size(n, args, services, workers)
            except Exception as error:  # keep the other sizes' figures
                result = SizeResult(n, aborted=f"{type(error).__name__}: {error}")
            results.append(result)
            print(
                f"N={n}: {'ABORTED: ' + result.aborted if result.aborted else 'done'} "
                f"(pending {secs(result.pending_seconds)}, drain {secs(result.drain_seconds)}, "
                f"peak RSS {mb(result.peak_rss)})",
                flush=True,
            )
    report(results, args)


if __name__ == "__main__":
    main()
