"""A running run's usage so far, pushed to the campaign store for the hosts that cannot read its transcript.

Only the host that runs a session has its transcript. So that a report or a reaper on another
host (sharing a PostgreSQL store) sees what the session has spent, its supervisor pushes the
figures so far with ``record_run_progress`` at most every ``run_progress_interval``, and only
when the session moved since the last push; its end is recorded with the final figures as
always. The transcript is read as it grows (``TranscriptTally``): a push reads only what was
appended since the one before. A push that fails is a warning: progress is never worth
stopping a run for, so this follower never ends the race it runs in.
"""

from __future__ import annotations

import logging

import anyio

from expeditor.executor.models import Signal
from expeditor.executor.session import LiveSession, Verdict
from expeditor.state import CampaignStore
from expeditor.usage.models import SessionUsage
from expeditor.usage.transcript import TranscriptTally

__all__ = ["ProgressFollower", "last_moved"]

logger = logging.getLogger(__name__)

_ACTIVITY = (Signal.STDOUT, Signal.TRANSCRIPT, Signal.STDERR)


def last_moved(session: LiveSession) -> float | None:
    """When the session last wrote anything (epoch seconds), or None if it has not yet."""
    session.observe_transcript()  # the silence watchers look only when a verdict could be due
    moved = session.clock.wall()
    return max((moved[signal] for signal in _ACTIVITY if signal in moved), default=None)


class ProgressFollower:
    """Follows one run while it goes on and pushes its usage so far to ``store``; never returns a verdict."""

    def __init__(self, store: CampaignStore, run_id: str, *, interval: float) -> None:
        self.store = store
        self.run_id = run_id
        self.interval = interval
        self._failing = False

    async def watch(self, session: LiveSession) -> Verdict:
        path = session.transcript_path
        tally = None if path is None else TranscriptTally(path, session.transcript_offset)
        pushed: float | None = None
        while True:
            await anyio.sleep(self.interval)
            moved = last_moved(session)
            if moved is None or moved == pushed:
                continue
            # Abandoned when the run ends: a push that lands after the end changes nothing, since only a
            # running launch takes progress.
            if await anyio.to_thread.run_sync(self._push, tally, moved, abandon_on_cancel=True):
                pushed = moved

    def _push(self, tally: TranscriptTally | None, moved: float) -> bool:
        try:
            usage = SessionUsage() if tally is None else tally.read()
            self.store.record_run_progress(self.run_id, usage=usage, last_moved=moved)
        except Exception as exc:  # whatever the store or the file does, the run goes on
            log = logger.debug if self._failing else logger.warning
            log("session=%s: its usage so far could not be recorded (the run goes on): %s", self.run_id, exc)
            self._failing = True
            return False
        if self._failing:
            logger.info("session=%s: its usage so far is recorded again", self.run_id)
        self._failing = False
        return True
