"""What a server (or a pipeline runner) finds at start-up that a killed one left behind.

Registry entries whose owning server is dead describe sessions nobody supervises: their trees
are killed (a pid is only signalled when its start time matches the entry) and their runs are
marked ``interrupted``; so are the dispatch records a dead process claimed, so that nobody reads
them as still running; markers whose holder died are removed. Entries and records of live
servers are left alone: they are someone else's.

The registry and the markers are files on this host: they describe processes here, which only
this host can signal. A run owned by another host (a shared store) is closed with the figures its
supervisor last pushed to the store; its transcript is on its host and is never looked for here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import psutil

from expeditor.config import Settings
from expeditor.errors import ExpeditorError
from expeditor.executor import SessionContainment
from expeditor.executor.containment import end_group
from expeditor.executor.process_tree import snapshot_targets, terminate
from expeditor.executor.registry import SessionRegistry
from expeditor.monitor.markers import remove_orphaned_markers
from expeditor.reports.aggregate import figures_so_far
from expeditor.state import CampaignStore, RunStatus
from expeditor.usage import SessionUsage

__all__ = ["reap_leftovers"]

logger = logging.getLogger(__name__)


def _figures_of_orphaned_runs(store: CampaignStore) -> dict[tuple[str, int], SessionUsage]:
    """What the running runs of dead owners spent: from their transcripts on this host, from what their
    supervisors last pushed to the store for another host's (whose transcripts are not here)."""
    figures: dict[tuple[str, int], SessionUsage] = {}
    for run in store.list_runs(status=RunStatus.RUNNING):
        so_far = None if store.owner_alive(run) else figures_so_far(run, host=store.host)
        if so_far is not None:
            figures[(run.run_id, run.launch)] = so_far
    return figures


async def reap_leftovers(
    settings: Settings, registry: SessionRegistry, store: CampaignStore, containment: SessionContainment | None = None
) -> int:
    """Kill the sessions of dead servers, forget their entries, interrupt their runs and dispatches; returns
    how many sessions were reaped.

    With cgroup containment, the session groups of dead servers are killed and removed too: what a
    clean-environment daemon of theirs left is in them, whatever the registry knew.
    """
    reaped = 0
    for entry in registry.entries():
        if entry.owner_alive():
            continue
        if entry.session_alive():
            try:
                root = psutil.Process(entry.pid)
            except psutil.Error:
                root = None
            if root is not None and root.create_time() == entry.pid_start_time:
                targets = snapshot_targets(root, entry.pgid, entry.session_id)
                killed = await terminate(targets, entry.pgid, grace=settings.shutdown_grace)
                logger.warning(
                    "session=%s left by a dead server (pid %d): killed %d processes",
                    entry.session_id,
                    entry.owner_pid,
                    len(killed),
                )
        if entry.cgroup is not None:
            # Its group holds what the tree cannot find (a clean-environment daemon), whatever we use now.
            await end_group(Path(entry.cgroup), within=settings.shutdown_grace + 2)
        registry.remove(entry.session_id)
        reaped += 1
    for name in registry.remove_abandoned_writes():
        logger.info("removed %s: its writer died mid-write", name)
    if containment is not None:
        for name in await anyio.to_thread.run_sync(containment.reap_dead_servers, settings.shutdown_grace + 2):
            logger.warning("killed and removed control group %s: its server died", name)
    for name in remove_orphaned_markers(settings.markers_path):
        logger.warning("removed marker %s: its holder died without removing it", name)
    try:
        figures = await anyio.to_thread.run_sync(_figures_of_orphaned_runs, store)
        interrupted = await anyio.to_thread.run_sync(store.interrupt_runs_of_dead_owners, figures)
    except ExpeditorError as exc:
        logger.warning("could not mark the runs of dead servers interrupted: %s", exc)
    else:
        for run in interrupted:
            logger.warning("session=%s marked interrupted: its server died", run.run_id)
    try:
        orphaned = await anyio.to_thread.run_sync(store.interrupt_dispatches_of_dead_owners)
    except ExpeditorError as exc:
        logger.warning("could not mark the dispatches of dead servers interrupted: %s", exc)
    else:
        for record in orphaned:
            logger.warning("%s/%s marked interrupted: %s", record.campaign_id, record.name, record.error)
    return reaped
