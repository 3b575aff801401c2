"""Telling a working session from a stuck one: execution markers, watchers, bounded suppression."""

from expeditor.monitor.markers import (
    ActiveMarker,
    execution_marker,
    find_active_marker,
    parse_marker_name,
    touch_marker,
    write_marker,
)
from expeditor.monitor.process_table import Activity, ProcessTable
from expeditor.monitor.suppression import SuppressionDecision, SuppressionPolicy
from expeditor.monitor.watchers import (
    LIVENESS_SIGNALS,
    ChildrenWatcher,
    SilenceWatcher,
    default_watchers,
    standard_watchers,
)

__all__ = [
    "LIVENESS_SIGNALS",
    "ActiveMarker",
    "Activity",
    "ChildrenWatcher",
    "ProcessTable",
    "SilenceWatcher",
    "SuppressionDecision",
    "SuppressionPolicy",
    "default_watchers",
    "execution_marker",
    "find_active_marker",
    "parse_marker_name",
    "standard_watchers",
    "touch_marker",
    "write_marker",
]
