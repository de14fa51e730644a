"""Chats per second end to end: the offline model, no approval, one worker host.

    .venv/bin/python bench/turn_throughput.py --m 2000 --workers 2 --concurrency 8   # default: 1000 chats

M customers each ask "where is my order B-xxxxx" about their own order: the offline model calls
``lookup_order`` (no approval), then answers. The bench posts the M messages with the real
``conversation_post_message`` (``--post-threads`` threads) with their runs held back, then
queues the M runs at once (as the floor's burst is queued) and waits until all have succeeded:
the rate is the workers', not the posting's. Beside it, measured in the same run on the same workers:

- the floor: an empty Celery task (``bench.noop``: one ``RPUSH`` of a flag the bench ``BLPOP``s,
  as there is no result backend) - sequential ``delay`` -> done round trips, and the throughput
  of a burst of them;
- one chat at a time: post, wait until the run succeeded (``--sequential`` chats), for the
  end-to-end latency of a single chat on idle workers beside the empty task's round trip.

Workers and options as in ``pending_capacity.py``. Scratch PostgreSQL database:
``anvia_bench_turns``. Bounded by ``--timeout`` (default 600 s).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time

import harness  # puts the repository on sys.path
from harness import mb, ms, percentile, secs

QUESTION = "Hi, where is my order {}?"


class FinishedListener:
    """Listens on a conversation's channel-layer group, on an event loop of its own, for the
    run's ``run.finished`` message (what the chat's websocket forwards to the customer)."""

    def __enter__(self) -> FinishedListener:
        import asyncio
        import threading

        self.asyncio = asyncio
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, name="finished-listener", daemon=True).start()
        self.channel = self._run(self._new_channel())
        self.group = ""
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)

    def _run(self, coroutine, timeout: float = 30.0):
        return self.asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    async def _new_channel(self) -> str:
        from channels.layers import get_channel_layer

        self.layer = get_channel_layer()
        return await self.layer.new_channel()

    def follow(self, conversation_id: int) -> None:
        from agents.services import conversation_group

        async def move() -> None:
            if self.group:
                await self.layer.group_discard(self.group, self.channel)
            self.group = conversation_group(conversation_id)
            await self.layer.group_add(self.group, self.channel)

        self._run(move())

    def finished(self, timeout: float) -> float | None:
        """When the next ``run.finished`` arrived (perf_counter), or ``None`` after ``timeout``."""

        async def receive() -> float:
            while True:
                message = await self.layer.receive(self.channel)
                if message.get("type") == "run.finished":
                    return time.perf_counter()

        try:
            return self._run(self.asyncio.wait_for(receive(), timeout), timeout + 1)
        except (TimeoutError, self.asyncio.TimeoutError):
            return None


def post_held(conversation_ids: list[int], threads: int):
    """Post one message per conversation with their runs held back: (seconds, queue the runs)."""
    import agents.services as services

    held: list = []
    real_enqueue = services.run_enqueue
    services.run_enqueue = lambda *, run_id: held.append(run_id)
    try:
        seconds = harness.post_messages(conversation_ids, QUESTION.format, threads)
    finally:
        services.run_enqueue = real_enqueue

    def queue_runs() -> None:
        for run_id in held:
            real_enqueue(run_id=run_id)

    return seconds, queue_runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--m", type=int, default=1000, help="chats in the throughput burst")
    parser.add_argument("--sequential", type=int, default=30, help="chats one at a time, for latency")
    parser.add_argument("--warmup", type=int, default=3, help="first single chats left out (a cold worker)")
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--post-threads", type=int, default=4)
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="instead: N chats in this process, one conversation, with a per-phase breakdown (run_phases.py)",
    )
    parser.add_argument("--profile-out", default="", metavar="FILE", help="with --profile: save a cProfile there too")
    harness.add_worker_arguments(parser)
    args = parser.parse_args()
    with harness.worker_host(args, "anvia_bench_turns", "turn throughput") as (services, workers):
        if args.profile:
            import run_phases

            run_phases.profile_chats(args.profile, QUESTION.format, profile_out=args.profile_out)
            return
        from django.db.models import Count

        from agents.models import AgentRun, Conversation, Message
        from agents.services import conversation_post_message
        from shop.models import Order

        conversation_ids = harness.create_customers(args.m + args.warmup + args.sequential, prefix="B")
        workers.start()
        floor = harness.measure_floor(workers, services.redis_url)
        deadline = time.monotonic() + args.timeout

        with harness.Sampler(workers, services.redis_url) as sampler:
            # One chat at a time: post (in this thread, the real service) -> the run's
            # ``run.finished`` message on the conversation's group, as the chat's socket gets it.
            single_ms = []
            with FinishedListener() as listener:
                for conversation_id in conversation_ids[args.m :]:
                    conversation = Conversation.objects.select_related("user").get(pk=conversation_id)
                    content = QUESTION.format(Order.objects.get(customer=conversation.user).number)
                    listener.follow(conversation_id)
                    started = time.perf_counter()
                    conversation_post_message(conversation=conversation, content=content)
                    finished_at = listener.finished(timeout=max(1.0, deadline - time.monotonic()))
                    if finished_at is None:
                        sys.exit("A single chat did not finish in time.")
                    single_ms.append((finished_at - started) * 1000)
            single_ms = single_ms[args.warmup :]

            # A burst of M chats: the messages are posted first (the web's work, not timed), then
            # their M runs are queued at once, as the floor's burst of empty tasks is.
            burst = conversation_ids[: args.m]
            post_seconds, queue_runs = post_held(burst, args.post_threads)
            started = time.perf_counter()
            mark = sampler.mark()
            queue_runs()

            def all_finished() -> tuple[bool, str]:
                counts = dict(
                    AgentRun.objects.filter(conversation_id__in=burst)
                    .values_list("status")
                    .annotate(c=Count("pk"))
                    .values_list("status", "c")
                )
                finished = counts.get("succeeded", 0) + counts.get("failed", 0)
                return finished == args.m, str(counts)

            done, progress = harness.wait_for(all_finished, deadline=deadline, interval=0.05)
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
        if not done:
            print(f"ABORTED after {args.timeout:.0f} s: {progress}")
        succeeded = statuses.get("succeeded", 0)
        rate = succeeded / elapsed
        rows = [
            [
                "chats/s (burst of M)",
                f"{rate:.1f}/s ({succeeded} of {args.m} in {secs(elapsed)})",
                f"{floor.rate()}; {floor.cpu_note()}",
                f"posted beforehand in {secs(post_seconds)}; {usage.per(args.m)}",
            ],
            [
                "one chat at a time p50 / p99",
                f"{ms(percentile(single_ms, 50))} / {ms(percentile(single_ms, 99))}",
                floor.round_trip(),
                f"{len(single_ms)} chats: post -> run.finished on the conversation's group",
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
        harness.print_table(["figure", "measured", "floor (empty Celery task, same workers)", "note"], rows)
        print(
            f"\nratio: chats/s is {rate / floor.per_second * 100:.1f}% of the empty-task rate; "
            f"one chat takes {percentile(single_ms, 50) / percentile(floor.sequential_ms, 50):.1f}x "
            "an empty task's round trip"
        )
        workers.print_errors()


if __name__ == "__main__":
    main()
