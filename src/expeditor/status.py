"""What is running now, and why each session is considered alive: for `expeditor status` and `list_sessions`.

It reads only shared files (the live-session registry, the marker directory, transcripts), so it
works from any process while a server or a pipeline runs in another. The sessions are this host's;
with a PostgreSQL store, `expeditor status` also shows the hosts sharing it (their leases, slots and
slots in use), the queue's waiting jobs and the dispatches each host holds (``state.cluster``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from pydantic import BaseModel, Field
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from expeditor.config import Settings
from expeditor.executor.models import Signal
from expeditor.executor.registry import SessionEntry, SessionRegistry
from expeditor.monitor import find_active_marker
from expeditor.state import CampaignStore, DispatchRecord, StepExecution, StepStatus, open_store
from expeditor.state.cluster import ClusterView, cluster_of
from expeditor.state.opening import store_description, store_may_hold_records

__all__ = [
    "SessionInfo",
    "StatusSnapshot",
    "dispatch_table",
    "hosts_table",
    "live_sessions",
    "session_table",
    "show_status",
    "steps_table",
]


_PIPE_WIDTH = 200


class SessionInfo(BaseModel):
    """One live managed session, as the live-session registry and the marker directory describe it."""

    session_id: str = Field(description="The session's id (cancel_session takes it).")
    kind: str = Field(description="skill, orchestrator, pipeline or command.")
    pid: int = Field(description="Its process id.")
    caller_session_id: str | None = Field(description="The session waiting on it, if known.")
    cwd: str = Field(description="Its working directory.")
    elapsed_s: float = Field(description="How long it has run, seconds.")
    silent_s: dict[str, float] = Field(description="Seconds since each liveness signal last moved.")
    active_marker: str | None = Field(description="The marker vouching for this session, if any.")
    owner_alive: bool = Field(description="False when the server that launched it is gone (orphaned).")
    waiting_on: str = Field(description="What the session is blocked on, when known.")
    alive_because: str = Field(description="Why it is considered alive (or that it is orphaned).")
    containment: str = Field(
        default="tree", description="cgroup (the session's own group) or tree (process group, tree, environment tag)."
    )
    task_id: str | None = Field(
        default=None, description="The MCP task whose run this is, when a client polls it as a task."
    )


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _silences(entry: SessionEntry, now: float) -> dict[str, float]:
    moved = {signal.value: at for signal, at in entry.last_moved.items()}
    if entry.transcript_path:
        # The registry entry is written on movement; the transcript's mtime is exact.
        try:
            mtime = os.stat(entry.transcript_path).st_mtime
        except OSError:
            mtime = None
        if mtime is not None and mtime >= entry.started_at:
            moved[Signal.TRANSCRIPT.value] = max(moved.get(Signal.TRANSCRIPT.value, 0.0), mtime)
    return {signal: round(max(now - at, 0.0), 1) for signal, at in sorted(moved.items())}


def live_sessions(settings: Settings, registry: SessionRegistry | None = None) -> list[SessionInfo]:
    """Every session in the registry, with what it waits on and why it is considered alive."""
    registry = registry or SessionRegistry(settings.sessions_dir)
    now = time.time()
    entries = registry.entries()
    infos: list[SessionInfo] = []
    for entry in entries:
        # A status reader knows no run's per-call timeout: the settings' longest call bounds every marker.
        marker = find_active_marker(
            settings.markers_path,
            entry.session_id,
            freshness=settings.marker_freshness,
            longest_call=settings.longest_call,
        )
        children = [other for other in entries if other.caller_session_id == entry.session_id]
        silent = _silences(entry, now)
        owner_alive = entry.owner_alive()
        if marker is not None:
            waiting = f"a {marker.label} call" + (
                f" running session {children[0].session_id} ({children[0].kind.value})" if children else ""
            )
        else:
            waiting = "its own work (no tool call is vouched for)"
        if not owner_alive:
            because = f"orphaned: its server (pid {entry.owner_pid}) is gone; the next server start reaps it"
        elif marker is not None:
            because = f"silent is fine: marker {marker.name} is fresh (held by pid {marker.owner_pid})"
        elif silent:
            signal, seconds = min(silent.items(), key=lambda item: item[1])
            because = f"{signal} moved {seconds:.0f}s ago"
        else:
            because = f"started {now - entry.started_at:.0f}s ago, no output yet"
        infos.append(
            SessionInfo(
                session_id=entry.session_id,
                kind=entry.kind.value,
                pid=entry.pid,
                caller_session_id=entry.caller_session_id,
                cwd=entry.cwd,
                task_id=entry.task_id,
                elapsed_s=round(now - entry.started_at, 1),
                silent_s=silent,
                active_marker=marker.name if marker else None,
                owner_alive=owner_alive,
                waiting_on=waiting,
                alive_because=because,
                containment=entry.containment,
            )
        )
    return infos


def session_table(sessions: Sequence[SessionInfo]) -> Table:
    table = Table(title=f"Live sessions ({len(sessions)})")
    for column in (
        "session",
        "kind",
        "pid",
        "caller",
        "held by",
        "running",
        "silent (s)",
        "waiting on",
        "alive because",
    ):
        table.add_column(column)
    for info in sessions:
        table.add_row(
            info.session_id[:8],
            info.kind,
            str(info.pid),
            (info.caller_session_id or "-")[:8] + (f" (task {info.task_id[:8]})" if info.task_id else ""),
            info.containment,
            f"{info.elapsed_s:.0f}s",
            ", ".join(f"{signal} {seconds:.0f}" for signal, seconds in info.silent_s.items()) or "-",
            info.waiting_on,
            info.alive_because,
        )
    return table


def dispatch_table(campaign: str, records: Sequence[DispatchRecord]) -> Table:
    table = Table(title=f"Campaign {campaign} ({_count(len(records), 'job')})")
    for column in ("job", "status", "attempts", "session", "tokens (in/out/cache read)", "updated", "branch"):
        table.add_column(column)
    for record in records:
        usage = record.usage.total if record.usage else None
        table.add_row(
            record.name,
            record.status.value,
            str(record.attempts),
            (record.dispatched_session_id or "-")[:8],
            f"{usage.input_tokens}/{usage.output_tokens}/{usage.cache_read_tokens}" if usage else "-",
            time.strftime("%H:%M:%S", time.localtime(record.updated_at)),
            record.branch or "-",
        )
    return table


def steps_table(campaign: str, name: str, executions: Sequence[StepExecution]) -> Table:
    """A pipeline job's step executions: where it stands, and where a rerun would resume."""
    table = Table(title=f"Pipeline {campaign}/{name} ({_count(len(executions), 'step execution')})")
    for column in ("#", "step", "status", "attempts", "run", "duration", "note"):
        table.add_column(column)
    now = time.time()
    for execution in executions:
        started = execution.started_at or now
        ended = execution.finished_at or now
        table.add_row(
            str(execution.sequence),
            execution.step,
            execution.status.value,
            str(execution.attempts),
            (execution.run_id or "-")[:8],
            f"{ended - started:.1f}s",
            (execution.reason or "")[:80] if execution.status is not StepStatus.SUCCESS else "",
        )
    return table


def hosts_table(cluster: ClusterView) -> Table:
    """The hosts sharing the store: each lease, and the dispatches each host holds by status."""
    waiting = "no queue" if cluster.jobs_waiting is None else _count(cluster.jobs_waiting, "job") + " waiting"
    table = Table(title=f"Hosts of {cluster.store} ({waiting})")
    for column in ("host", "process", "slots", "in use", "heartbeat (s ago)", "dispatches"):
        table.add_column(column)
    shown: set[str] = set()
    for lease in cluster.hosts:
        # A host's dispatches are the host's, not one process's: said on its first row.
        held = {} if lease.host in shown else cluster.dispatches_by_host.get(lease.host, {})
        shown.add(lease.host)
        table.add_row(
            lease.host,
            f"{lease.kind} {lease.pid}",
            "-" if lease.slots is None else str(lease.slots),
            str(lease.in_use),
            f"{lease.heartbeat_age_s:.1f}" + ("" if lease.alive else " (expired)"),
            ", ".join(f"{status} {count}" for status, count in held.items()) or "-",
        )
    for host in sorted(set(cluster.dispatches_by_host) - {lease.host for lease in cluster.hosts}):
        held = cluster.dispatches_by_host[host]
        table.add_row(host, "no lease", "-", "0", "-", ", ".join(f"{s} {n}" for s, n in held.items()))
    return table


class StatusSnapshot(BaseModel):
    """What ``status --json`` prints: the home read, its live sessions, and a campaign's records."""

    home: str = Field(description="The home these records were read from.")
    sessions: list[SessionInfo]
    campaign: str | None = Field(default=None, description="The campaign asked for, if any.")
    dispatches: list[DispatchRecord] = Field(default_factory=list[DispatchRecord])
    steps: dict[str, list[StepExecution]] = Field(
        default_factory=dict[str, list[StepExecution]],
        description="Each pipeline job's step executions, by job name.",
    )
    cluster: ClusterView | None = Field(
        default=None, description="With a PostgreSQL store: its hosts, waiting jobs and dispatches per host."
    )
    cluster_error: str | None = Field(default=None, description="Why the store's hosts could not be read.")


def _snapshot(settings: Settings, store: CampaignStore | None, campaign: str | None) -> StatusSnapshot:
    snapshot = StatusSnapshot(home=str(settings.home), sessions=live_sessions(settings), campaign=campaign)
    cluster = cluster_of(settings)
    if isinstance(cluster, str):
        snapshot.cluster_error = cluster
    else:
        snapshot.cluster = cluster
    if store is not None and campaign is not None:
        snapshot.dispatches = store.list(campaign)
        for record in snapshot.dispatches:
            executions = store.list_steps(campaign, record.name)
            if executions:
                snapshot.steps[record.name] = executions
    return snapshot


def _render(snapshot: StatusSnapshot) -> Group:
    parts: list[RenderableType] = [
        Text(f"Home: {snapshot.home}", no_wrap=True, overflow="ignore"),
        session_table(snapshot.sessions),
    ]
    if snapshot.cluster is not None:
        parts.append(hosts_table(snapshot.cluster))
    if snapshot.cluster_error is not None:
        parts.append(Text(f"Hosts: {snapshot.cluster_error}"))
    if snapshot.campaign is not None:
        parts.append(dispatch_table(snapshot.campaign, snapshot.dispatches))
        parts += [steps_table(snapshot.campaign, name, executions) for name, executions in snapshot.steps.items()]
    return Group(*parts)


def _open_campaign(settings: Settings, campaign: str, err: TextIO) -> CampaignStore | None:
    """The store holding ``campaign``, or None (said on ``err``) when the home has no such campaign."""
    if store_may_hold_records(settings):
        store = open_store(settings)
        if store.list(campaign):
            return store
        store.close()
    err.write(f"expeditor: no campaign {campaign!r} in {store_description(settings)} (home {settings.home})\n")
    return None


def show_status(
    settings: Settings,
    *,
    campaign: str | None,
    watch: bool,
    interval: float,
    as_json: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Print the live sessions (and the campaign's jobs and pipeline steps); with ``watch``, until Ctrl-C.

    1 when the home does not exist (nothing has run for this project) or holds no such campaign.
    On a terminal ``watch`` redraws one table; elsewhere it prints one plain snapshot per interval.
    """
    out_stream = out if out is not None else sys.stdout
    err_stream = err if err is not None else sys.stderr
    if settings.store_url is None and not settings.home.is_dir():
        err_stream.write(f"expeditor: nothing has run for this project: no home at {settings.home}\n")
        return 1
    store = None
    if campaign is not None:
        store = _open_campaign(settings, campaign, err_stream)
        if store is None:
            return 1
    console = Console(file=out_stream)
    if not console.is_terminal:  # a pipe has no width of its own: let the tables take their natural one
        console = Console(file=out_stream, width=_PIPE_WIDTH)
    try:
        if as_json:
            out_stream.write(_snapshot(settings, store, campaign).model_dump_json(indent=2) + "\n")
        elif not watch:
            console.print(_render(_snapshot(settings, store, campaign)))
        elif console.is_terminal:
            with Live(_render(_snapshot(settings, store, campaign)), console=console, refresh_per_second=2) as live:
                while True:
                    time.sleep(interval)
                    live.update(_render(_snapshot(settings, store, campaign)))
        else:
            while True:
                console.print(f"--- {time.strftime('%H:%M:%S')} ---")
                console.print(_render(_snapshot(settings, store, campaign)))
                out_stream.flush()
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:
        # The reader went away (``status --watch | head``): that ends the watch, quietly.
        if out_stream is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    finally:
        if store is not None:
            store.close()
    return 0
