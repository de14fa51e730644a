"""Try a candidate approval rule on the recorded calls of a tool, changing nothing.

    manage.py approvals_replay --tool refund_order --rule myapp.rules.refund_rule

The rule is a dotted path to a function of the call (``True``: ask a person, ``False``: allow,
or one of "allow", "deny", "ask"), a rule built with ``anvia.allow/deny/ask``, or a list of them
(a policy: first match wins, no match asks). Calls are replayed with the arguments and the facts
their policy read when they were made (``call.args.<name>``, ``call.facts[...]``).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from approvals.models import PolicyCheck
from approvals.policy_checks import describe_call, policy_replay


class Command(BaseCommand):
    help = "Run a candidate approval rule over a tool's recorded calls and print what would change (read-only)."

    def add_arguments(self, parser):
        parser.add_argument("--tool", required=True, help="The tool's name, e.g. refund_order.")
        parser.add_argument("--rule", required=True, help="Dotted path to the candidate rule, policy or function.")
        parser.add_argument("--limit", type=int, default=20, help="How many calls to list per group (default 20).")

    def handle(self, *args, tool, rule, limit, **options):
        try:
            candidate = import_string(rule)
        except ImportError as error:
            raise CommandError(f"Cannot import the rule {rule!r}: {error}") from None
        if not PolicyCheck.objects.filter(tool_name=tool).exists():
            raise CommandError(f"No recorded calls of {tool!r}: nothing to replay (is the tool name right?).")
        report = policy_replay(tool_name=tool, candidate=candidate)
        out = self.stdout
        out.write(f"Replayed {len(report.calls)} recorded calls of {tool} with {rule} (nothing was changed).")
        out.write(f"  unchanged: {len(report.unchanged)}")
        skip = report.would_skip_review
        out.write(f"  would skip review: {len(skip)} (asked a person then; the rule would not)")
        rejected = report.rejected_but_would_skip_review
        would_run = sum(1 for call in rejected if call.now == "allow")
        out.write(f"    of which a person had rejected: {len(rejected)} ({would_run} would now run unasked)")
        for call in rejected[:limit]:
            out.write(f"      {describe_call(call)} -> now {call.now}")
        out.write(f"  would now ask: {len(report.would_now_ask)} (ran or were refused unasked then)")
        for call in report.would_now_ask[:limit]:
            out.write(f"      {describe_call(call)}")
        out.write(f"  would now deny: {len(report.would_now_deny)} (ran unasked then)")
        for call in report.would_now_deny[:limit]:
            out.write(f"      {describe_call(call)}")
        out.write(f"  would now run unasked: {len(report.would_now_run)} (the policy refused them then)")
        for call in report.would_now_run[:limit]:
            out.write(f"      {describe_call(call)}")
        if report.failed:
            out.write(f"  the rule raised on {len(report.failed)} calls (counted as asking, as a live rule would):")
            for call in report.failed[:limit]:
                out.write(f"      {describe_call(call)}: {call.error}")
