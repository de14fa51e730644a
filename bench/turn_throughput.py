"""Chats per second end to end: the offline model, no approval, one worker host.

    .venv/bin/python bench/turn_throughput.py                   # M = 1000 chats
    .venv/bin/python bench/turn_throughput.py --m 2000 --workers 2 --concurrency 8
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/turn_throughput.py

M customers each ask "where is my order B-xxxxx" about their own order: the offline model calls
``lookup_order`` (no approval), then answers. The bench posts the M messages with the real
``conversation_post_message`` (``--post-threads`` threads; each run is enqueued after commit) and
waits until all M runs have succeeded. Beside it, measured in the same run on the same workers:

- the floor: an empty Celery task (``bench.noop``: one ``RPUSH`` of a flag the bench ``BLPOP``s,
  as there is no result backend) - sequential ``delay`` -> done round trips, and the throughput
  of a burst of them;
- one chat at a time: post, wait until the run succeeded (``--sequential`` chats), for the
  end-to-end latency of a single chat on idle workers beside the empty task's round trip.

Workers, services, ``--env`` / ``--set`` / ``--patch`` are as in ``pending_capacity.py`` (this
script shares its code). Scratch PostgreSQL database: ``anvia_bench_turns``. Bounded by
``--timeout`` (default 600 s); workers stopped and the scratch database dropped in ``finally``.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pending_capacity import (
    Sampler,
    Workers,
    common_arguments,
    create_customers,
    django_setup_and_migrate,
    empty_broker,
    load_average,
    mb,
    measure_floor,
    ms,
    parse_settings,
    percentile,
    post_messages,
    prepare_environment,
    print_table,
    scratch_services,
    secs,
    wait_for,
)

QUESTION = "Hi, where is my order {number}?"


def main() -> None:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: stop workers, drop DB
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=1000, help="chats in the throughput burst")
    parser.add_argument("--sequential", type=int, default=30, help="chats one at a time, for latency")
    parser.add_argument("--warmup", type=int, default=3, help="first single chats left out (a cold worker)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--post-threads", type=int, default=4)
    common_arguments(parser)
    args = parser.parse_args()
    worker_env = prepare_environment(args)
    log_dir = Path(tempfile.mkdtemp(prefix="anvia-bench-turns-"))
    workers = None
    try:
        with scratch_services("anvia_bench_turns") as services:
            django_setup_and_migrate()
            from django.db import connections
            from django.db.models import Count

            from agents.models import AgentRun, Message

            empty_broker(services.redis_url, services.embedded_redis)
            conversation_ids = create_customers(args.m + args.warmup + args.sequential, prefix="B")
            workers = Workers(
                count=args.workers,
                pool=args.pool,
                concurrency=args.concurrency,
                loglevel=args.loglevel,
                log_dir=log_dir,
                env=worker_env,
            )
            print(f"turn throughput: {services.database_label}; {services.redis_label}")
            print(f"workers: {workers.describe()}")
            print(
                f"overrides: env {worker_env or '-'}; settings {parse_settings(args.set) or '-'}; "
                f"patches {','.join(args.patch) or '-'}"
            )
            print(f"load average before: {load_average()}", flush=True)
            workers.start()
            time.sleep(1.0)
            floor = measure_floor(services.redis_url, pids=workers.pids)
            deadline = time.monotonic() + args.timeout

            with Sampler(lambda: workers.pids, services.redis_url) as sampler:
                # One chat at a time.
                single_ms = []
                for conversation_id in conversation_ids[args.m :]:
                    started = time.perf_counter()
                    post_messages([conversation_id], lambda number: QUESTION.format(number=number), 1)
                    run = AgentRun.objects.filter(conversation_id=conversation_id)
                    done, _ = wait_for(
                        lambda run=run: (run.filter(status__in=AgentRun.FINISHED).exists(), ""),
                        deadline=deadline,
                        interval=0.005,
                    )
                    if not done:
                        sys.exit("A single chat did not finish in time.")
                    single_ms.append((time.perf_counter() - started) * 1000)
                single_ms = single_ms[args.warmup :]

                # A burst of M chats.
                burst = conversation_ids[: args.m]
                started = time.perf_counter()
                mark = sampler.mark()
                post_seconds = post_messages(burst, lambda number: QUESTION.format(number=number), args.post_threads)

                def all_finished() -> tuple[bool, str]:
                    counts = dict(
                        AgentRun.objects.filter(conversation_id__in=burst)
                        .values_list("status")
                        .annotate(c=Count("pk"))
                        .values_list("status", "c")
                    )
                    finished = counts.get("succeeded", 0) + counts.get("failed", 0)
                    return finished == args.m, str(counts)

                done, progress = wait_for(all_finished, deadline=deadline, interval=0.05)
                elapsed = time.perf_counter() - started
                usage = sampler.since(mark)
                peak_rss = sampler.peak_rss

            runs = AgentRun.objects.filter(conversation_id__in=burst)
            statuses = collections.Counter(runs.values_list("status", flat=True))
            latencies = [
                (finished - created).total_seconds() * 1000
                for created, finished in runs.values_list("created_at", "finished_at")
                if finished
            ]
            answered = Message.objects.filter(
                run__in=runs, role=Message.Role.ASSISTANT, content__startswith="Order B-"
            ).count()
            connections.close_all()

            print(f"\nload average after: {load_average()}")
            if not done:
                print(f"ABORTED after {args.timeout:.0f} s: {progress}")
            succeeded = statuses.get("succeeded", 0)
            rate = succeeded / elapsed
            rows = [
                [
                    "chats/s (burst of M)",
                    f"{rate:.1f}/s ({succeeded} of {args.m} in {secs(elapsed)})",
                    f"{floor.per_second:.0f} empty tasks/s (burst of {floor.burst}); {floor.cpu_note()}",
                    f"posting {secs(post_seconds)}; {usage.per(args.m)}",
                ],
                [
                    "one chat at a time p50 / p99",
                    f"{ms(percentile(single_ms, 50))} / {ms(percentile(single_ms, 99))}",
                    f"{ms(percentile(floor.sequential_ms, 50))} / {ms(percentile(floor.sequential_ms, 99))}",
                    f"{len(single_ms)} chats: post -> run succeeded (5 ms polling)",
                ],
                [
                    "burst: created -> finished p50 / p99",
                    f"{ms(percentile(latencies, 50))} / {ms(percentile(latencies, 99))}",
                    "",
                    "queueing included",
                ],
                ["worker peak RSS", mb(peak_rss), "", f"{args.workers} proc x -c {args.concurrency}"],
                ["run statuses", str(dict(statuses)), "", f"{answered} of {args.m} answered with the order's status"],
            ]
            print()
            print_table(["figure", "measured", "floor (empty Celery task, same workers)", "note"], rows)
            print(
                f"\nratio: chats/s is {rate / floor.per_second * 100:.1f}% of the empty-task rate; "
                f"one chat takes {percentile(single_ms, 50) / percentile(floor.sequential_ms, 50):.1f}x "
                "an empty task's round trip"
            )
            errors = workers.errors()
            if errors:
                print(f"\nthe workers logged {len(errors)} error lines, first ones:")
                for line in errors[:10]:
                    print("  " + line)
            workers.stop()
            empty_broker(services.redis_url, services.embedded_redis)
    finally:
        if workers is not None:
            workers.stop()
        if args.keep_logs:
            print(f"worker logs: {log_dir}")
        else:
            shutil.rmtree(log_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
