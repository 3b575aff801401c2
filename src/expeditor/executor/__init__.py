"""Launching one headless session and reporting exactly how it ended."""

from expeditor.executor.claude import (
    ClaudeCodeExecutor,
    WatcherFactory,
    build_command,
    checked_directory,
    child_environment,
)
from expeditor.executor.containment import ContainmentKind, SessionContainment, choose_containment
from expeditor.executor.models import (
    DecidedBy,
    KilledProcess,
    RunRequest,
    RunResult,
    SessionKind,
    Signal,
    Suppression,
    Termination,
)
from expeditor.executor.protocol import HeadlessExecutor
from expeditor.executor.registry import SessionEntry, SessionRegistry
from expeditor.executor.runner import OWN_CHILDREN, LaunchSpec, ManagedOutcome, RunControl, run_managed
from expeditor.executor.session import LiveSession, SignalClock, Verdict, Watcher

__all__ = [
    "OWN_CHILDREN",
    "ClaudeCodeExecutor",
    "ContainmentKind",
    "DecidedBy",
    "HeadlessExecutor",
    "KilledProcess",
    "LaunchSpec",
    "LiveSession",
    "ManagedOutcome",
    "RunControl",
    "RunRequest",
    "RunResult",
    "SessionContainment",
    "SessionEntry",
    "SessionKind",
    "SessionRegistry",
    "Signal",
    "SignalClock",
    "Suppression",
    "Termination",
    "Verdict",
    "Watcher",
    "WatcherFactory",
    "build_command",
    "checked_directory",
    "child_environment",
    "choose_containment",
    "run_managed",
]
