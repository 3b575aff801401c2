"""Dispatch: one named job of a campaign, launched at most once, here or on a queue worker."""

from expeditor.dispatch.attempt import DISPATCH_MARKER_LABEL, run_attempt
from expeditor.dispatch.command import LauncherFactory, dispatch_command
from expeditor.dispatch.outcome import DispatchOutcome
from expeditor.dispatch.service import DispatchService, Launcher, LocalLauncher, PreparedJob

__all__ = [
    "DISPATCH_MARKER_LABEL",
    "DispatchOutcome",
    "DispatchService",
    "Launcher",
    "LauncherFactory",
    "LocalLauncher",
    "PreparedJob",
    "dispatch_command",
    "run_attempt",
]
