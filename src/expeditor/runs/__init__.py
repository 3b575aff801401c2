"""The run service: how every entry point launches, supervises and records runs and jobs.

The server, the dispatcher, the pipeline runner, the CLI and the demo all build it the same way
(``open_runtime``), launch every supervised run through the ``Supervisor`` and take every job
through the ``JobLifecycle``.
"""

from expeditor.runs.budgets import JobLimits, check_budgets
from expeditor.runs.caller import CALLER_HEADER, CallerContext
from expeditor.runs.child_config import SERVER_NAME, allowed_tools, child_mcp_config, settings_environment
from expeditor.runs.endings import EndRetry
from expeditor.runs.handle import RunHandle, describe_activity
from expeditor.runs.hints import LAUNCH_HINT, launch_hint
from expeditor.runs.jobs import (
    AttemptBody,
    ClaimedJob,
    FencedOut,
    JobEnd,
    JobLifecycle,
    MarkRunning,
    RecordedEnd,
    ended_by,
    record_job_end,
    steps_to_forget,
)
from expeditor.runs.reaper import reap_leftovers
from expeditor.runs.records import RunContext
from expeditor.runs.runtime import Runtime, build_executor, open_runtime
from expeditor.runs.subreaper import become_subreaper, kill_leftovers, reap_exited
from expeditor.runs.supervisor import Supervisor

__all__ = [
    "CALLER_HEADER",
    "LAUNCH_HINT",
    "SERVER_NAME",
    "AttemptBody",
    "CallerContext",
    "ClaimedJob",
    "EndRetry",
    "FencedOut",
    "JobEnd",
    "JobLifecycle",
    "JobLimits",
    "MarkRunning",
    "RecordedEnd",
    "RunContext",
    "RunHandle",
    "Runtime",
    "Supervisor",
    "allowed_tools",
    "become_subreaper",
    "build_executor",
    "check_budgets",
    "child_mcp_config",
    "describe_activity",
    "ended_by",
    "kill_leftovers",
    "launch_hint",
    "open_runtime",
    "reap_exited",
    "reap_leftovers",
    "record_job_end",
    "settings_environment",
    "steps_to_forget",
]
