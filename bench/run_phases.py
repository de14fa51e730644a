"""Where a run's time goes: run chats in this process and time each phase of the worker's path.

``turn_throughput.py --profile N`` uses it: N chats, one after another in one conversation (so
the first prompt's cost growing with the conversation shows), each run by ``run_execute`` in this
process exactly as a worker thread runs it. Each phase is the service function named in the
table, wrapped for the run: wall time, this thread's CPU time and the SQL queries it made
(inclusive: "publish" is inside "event sink").
What no phase covers is the framework itself (the asyncio hops of ``send_sync``, state
handling) and the offline model. ``--profile-out FILE`` also saves a cProfile of the whole
process's calling thread (the event loop's thread is not in it) for ``python -m pstats``.
"""

from __future__ import annotations

import contextlib
import cProfile
import time
from collections import defaultdict
from dataclasses import dataclass, field

from harness import ms, print_table


@dataclass
class Phase:
    wall: float = 0.0
    cpu: float = 0.0
    queries: int = 0
    calls: int = 0


@dataclass
class PhaseTimer:
    phases: dict[str, Phase] = field(default_factory=lambda: defaultdict(Phase))
    _open: list[str] = field(default_factory=list)

    def wrap(self, name: str, function):
        timer = self

        def timed(*args, **kwargs):
            phase = timer.phases[name]
            timer._open.append(name)
            wall, cpu = time.perf_counter(), time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                phase.wall += time.perf_counter() - wall
                phase.cpu += time.thread_time() - cpu
                phase.calls += 1
                timer._open.pop()

        timed.__wrapped__ = function
        return timed

    def count_query(self, execute, sql, params, many, context):
        for name in set(self._open):
            self.phases[name].queries += 1
        self.phases["(all queries)"].queries += 1
        return execute(sql, params, many, context)


@contextlib.contextmanager
def _patched(timer: PhaseTimer):
    """Wrap the worker path's phases for the duration (bench process only)."""
    import agents.services as services
    from agents.registry import get_agent

    undo = []

    def patch(owner, attribute: str, name: str) -> None:
        original = getattr(owner, attribute, None)
        if original is None:
            return  # older code (e.g. a checkout to compare with) has no such phase
        setattr(owner, attribute, timer.wrap(name, original))
        undo.append(lambda: setattr(owner, attribute, original))

    patch(services, "run_claim", "claim")
    patch(services, "_first_prompt", "first prompt (history)")
    patch(services.RunRecorder, "event", "event sink")
    patch(services.RunRecorder, "publish", "  of which: publish to the socket")
    patch(services.RunRecorder, "checkpoint", "checkpoint (sync)")
    patch(services.RunRecorder, "_keep", "checkpoint (state kept)")
    patch(services.RunRecorder, "save", "write at once (state + events, fenced)")
    patch(services, "run_succeed", "finishing (run_succeed)")
    for tool in get_agent("support").tools.values():
        original = tool.execute
        object.__setattr__(tool, "execute", timer.wrap("tool bodies (their queries)", original))
        undo.append(lambda tool=tool, original=original: object.__setattr__(tool, "execute", original))
    try:
        yield
    finally:
        for step in reversed(undo):
            step()


def profile_chats(n: int, question_for, *, profile_out: str = "") -> None:
    """Run ``n`` chats in one conversation in this process and print the per-phase table."""
    from django.db import connection
    from harness import create_customers

    import agents.services as services
    from agents.models import AgentRun, Conversation, Message
    from shop.models import Order

    conversation = Conversation.objects.select_related("user").get(pk=create_customers(1, prefix="P")[0])
    number = Order.objects.get(customer=conversation.user).number
    services_enqueue = services.run_enqueue
    services.run_enqueue = lambda *, run_id: None  # the bench runs it here, no broker message
    timer = PhaseTimer()
    profiler = cProfile.Profile() if profile_out else None
    wall_total = cpu_total = 0.0
    try:
        for index in range(n + 2):
            run = services.conversation_post_message(conversation=conversation, content=question_for(number))
            measured = index >= 2  # two warm-up chats: imports, first connection, caches
            context = _patched(timer) if measured else contextlib.nullcontext()
            with context, connection.execute_wrapper(timer.count_query if measured else _passthrough):
                wall, cpu = time.perf_counter(), time.process_time()
                if measured and profiler:
                    profiler.enable()
                result = services.run_execute(run_id=run.pk, owner="bench-profile")
                if measured and profiler:
                    profiler.disable()
                if measured:
                    wall_total += time.perf_counter() - wall
                    cpu_total += time.process_time() - cpu
            if result is None or result.status != AgentRun.Status.SUCCEEDED:
                raise RuntimeError(
                    f"chat {index} did not succeed: {result and result.status} {result and result.error}"
                )
    finally:
        services.run_enqueue = services_enqueue
    answers = Message.objects.filter(conversation=conversation, role=Message.Role.ASSISTANT).count()
    print(f"\nprofile: {n} chats in one conversation, in this process (run_execute as a worker thread runs it);")
    print(f"{answers} answers; per chat: {ms(wall_total / n * 1000)} wall, {ms(cpu_total / n * 1000)} process CPU")
    rows = []
    for name, phase in timer.phases.items():
        if name == "(all queries)":
            continue
        rows.append(
            [
                name,
                ms(phase.wall / n * 1000),
                ms(phase.cpu / n * 1000),
                f"{phase.cpu / cpu_total * 100:.0f}%" if cpu_total else "-",
                f"{phase.calls / n:.1f}",
                f"{phase.queries / n:.1f}",
            ]
        )
    covered = sum(p.cpu for name, p in timer.phases.items() if not name.startswith((" ", "(")))
    rows.append(["the rest (framework, asyncio hops, model)", "", ms((cpu_total - covered) / n * 1000), "", "", ""])
    rows.append(
        [
            "all",
            ms(wall_total / n * 1000),
            ms(cpu_total / n * 1000),
            "100%",
            "",
            f"{timer.phases['(all queries)'].queries / n:.1f}",
        ]
    )
    print_table(["phase (per chat)", "wall", "CPU", "of CPU", "calls", "queries"], rows)
    if profiler:
        profiler.dump_stats(profile_out)
        print(f"cProfile of the calling thread: {profile_out} (python -m pstats {profile_out})")


def _passthrough(execute, sql, params, many, context):
    return execute(sql, params, many, context)
