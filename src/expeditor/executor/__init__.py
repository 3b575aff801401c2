"""Launching one headless session and reporting exactly how it ended."""

from expeditor.executor.claude import ClaudeCodeExecutor, build_command, child_environment
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
from expeditor.executor.runner import LaunchSpec, ManagedOutcome, RunControl, run_managed
from expeditor.executor.session import LiveSession, SignalClock, Verdict, Watcher

__all__ = [
    "ClaudeCodeExecutor",
    "DecidedBy",
    "HeadlessExecutor",
    "KilledProcess",
    "LaunchSpec",
    "LiveSession",
    "ManagedOutcome",
    "RunControl",
    "RunRequest",
    "RunResult",
    "SessionEntry",
    "SessionKind",
    "SessionRegistry",
    "Signal",
    "SignalClock",
    "Suppression",
    "Termination",
    "Verdict",
    "Watcher",
    "build_command",
    "child_environment",
    "run_managed",
]
