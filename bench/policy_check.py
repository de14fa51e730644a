"""What a tool policy costs per call: the refund policy of the support agent, decided and recorded.

For each of N calls of ``refund_order`` (on orders with a few refunds each), in one thread:

- floor: one ``SELECT`` of the order by its number (what any rule that reads the shop must pay);
- the old per-call rule, ``amount > 100`` (no database);
- the policy decided: ``Approval.evaluate`` with its facts (the order and its refunds in 30 days);
- the policy recorded: ``policy_check_record`` (the audit row the approval hook writes);
- both, as the run pays them for each call of a protected tool.

    .venv/bin/python bench/policy_check.py [--n 2000]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test .venv/bin/python bench/policy_check.py

With a PostgreSQL ``DATABASE_URL`` it works in its own scratch database ``anvia_bench_policy``.
"""

from __future__ import annotations

import argparse
import time
import uuid
from decimal import Decimal

import harness  # puts the repository on sys.path


def timed(function, rounds: int) -> list[float]:
    samples = []
    for index in range(rounds):
        started = time.perf_counter()
        function(index)
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="calls per row (default 2000)")
    parser.add_argument("--orders", type=int, default=50, help="orders, each with 3 refunds (default 50)")
    harness.add_quiet_arguments(parser)
    args = parser.parse_args()

    with harness.measured_services(args, "anvia_bench_policy") as (_services, _line, load_before):
        from agents.support import refund_order
        from anvia import Approval
        from anvia.core.tools import ToolCall, ToolHandle
        from approvals.policy_checks import policy_check_of_call
        from shop.models import Order, Refund

        customer, _reviewer = harness.bench_users()
        numbers = []
        for index in range(args.orders):
            order = Order.objects.create(
                number=f"P-{uuid.uuid4().hex[:8]}", customer=customer, description="bench", total=Decimal("900")
            )
            for part in range(3):
                Refund.objects.create(order=order, amount=Decimal("20"), idempotency_key=f"bench-{index}-{part}")
            numbers.append(order.number)

        def call_for(index: int) -> ToolCall:
            args_model = refund_order.input(order_id=numbers[index % len(numbers)], amount=30 + index % 200)
            return ToolCall(
                tool_name="refund_order",
                call_id=f"call-{index}",
                args=args_model,
                run_id=f"bench-{index}",
                context={"user_id": customer.pk},
                tool=ToolHandle(refund_order),
            )

        calls = [call_for(i) for i in range(args.n)]
        old_rule = Approval(when=lambda call: call.args.amount > 100)
        policy = refund_order.approval

        def record(index: int, verdict) -> None:
            calls[index].policy = verdict
            policy_check_of_call(calls[index], requested_by_id=customer.pk)

        verdicts = {}
        rows = {
            "floor: SELECT the order by number": timed(
                lambda i: Order.objects.filter(number=numbers[i % len(numbers)]).first(), args.n
            ),
            "old rule `amount > 100` (no database)": timed(lambda i: old_rule.evaluate(calls[i]), args.n),
            "refund policy decided (facts: 3 queries)": timed(
                lambda i: verdicts.__setitem__(i, policy.evaluate(calls[i])), args.n
            ),
            "the decision recorded (PolicyCheck)": timed(lambda i: record(i, verdicts[i]), args.n),
        }
        both = []
        for index in range(args.n):
            calls[index].call_id = f"again-{index}"
            started = time.perf_counter()
            record(index, policy.evaluate(calls[index]))
            both.append((time.perf_counter() - started) * 1000)
        rows["decided + recorded, per protected call"] = both
        floor = harness.summary(rows["floor: SELECT the order by number"])["p50"]
        table = []
        for name, samples in rows.items():
            figures = harness.summary(samples)
            table.append(
                [name, harness.ms(figures["p50"]), harness.ms(figures["p99"]), f"{figures['p50'] / floor:.1f}x"]
            )
        outcomes = {}
        for verdict in verdicts.values():
            outcomes[verdict.outcome] = outcomes.get(verdict.outcome, 0) + 1
        print(f"{args.n} calls per row on {args.orders} orders; outcomes of the policy: {outcomes}")
        harness.print_table(["per call", "p50", "p99", "p50 / floor"], table)
        print(f"load average before: {load_before}; after: {harness.load_average()}")


if __name__ == "__main__":
    main()
