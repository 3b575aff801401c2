"""Transcripts in the store: how an orchestrator's session resumes on a host that never ran it.

Claude Code keeps a session's conversation in one JSONL file on the host that ran it
(``claude_paths.transcript_path``). A job taken over by another host would start fresh without it, so
the worker that owns a running orchestrator copies its transcript into the store's ``transcripts`` table
every ``transcript_checkpoint_interval`` and once more when the run ends: each copy appends the bytes
written since the last one, zlib-compressed, keyed by their byte offset, and only whole lines, so the
stored transcript is always a prefix of the file that ends at a line break. It stops (and says so once)
at ``transcript_checkpoint_max_bytes``.

An attempt that resumes a session first restores it: the stored copy is written to this host's path for
the attempt's own cwd unless the local file already holds it (starts with every stored byte), then the
session is launched with ``--resume``. The pinned CLI resumes from such a copy, also at another cwd and
with a torn last line (docs/claude-code-cli-notes.md, "Resuming from a transcript copied to another
host"; tests/e2e/test_real_claude_resume_copied.py).

One writer per session: a piece is stored only at the end of what is stored, under a transaction lock on
the session, so a worker that lost its job (fenced out, or cut off) cannot splice its own bytes into the
copy of the host that took the session over; it stops checkpointing instead.
"""

from __future__ import annotations

import contextlib
import logging
import zlib
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import NamedTuple

import anyio

from expeditor.claude_paths import transcript_path
from expeditor.config import Settings
from expeditor.errors import StoreUnavailable
from expeditor.state.opening import postgres_url
from expeditor.state.pg_connections import PgServer
from expeditor.state.pg_rows import PgConnection

__all__ = ["Checkpointer", "StoredTranscripts", "TranscriptKeeping", "TranscriptSource", "restore_transcript"]

logger = logging.getLogger(__name__)

_NOW = "extract(epoch FROM now())"
_STORED_LENGTH = "SELECT COALESCE(MAX(byte_offset + raw_length), 0) AS length FROM transcripts WHERE session_id = %s"
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('expeditor transcript'), hashtext(%s))"


class StoredTranscripts:
    """The ``transcripts`` table of one PostgreSQL store, written as ``host``."""

    def __init__(self, server: PgServer, *, host: str) -> None:
        self._server = server
        self.host = host

    @classmethod
    def of(cls, settings: Settings) -> StoredTranscripts:
        """On ``settings.store_url``, with a small pool of its own (close it)."""
        url = postgres_url(settings)
        if url is None:
            raise StoreUnavailable("stored transcripts need a PostgreSQL store_url")
        server = PgServer(url, schema=settings.store_schema, pool_size=2, timeout=settings.store_timeout)
        return cls(server, host=settings.host_name)

    def close(self) -> None:
        self._server.close()

    def stored_length(self, session_id: str) -> int:
        """How many bytes of the session's transcript the store holds (0: none)."""

        def query(connection: PgConnection) -> int:
            row = connection.execute(_STORED_LENGTH, (session_id,)).fetchone()
            return 0 if row is None else int(row["length"])

        return self._server.transaction(f"reading the stored length of transcript {session_id}", query)

    def append(self, session_id: str, offset: int, raw: bytes) -> bool:
        """Store ``raw`` as the bytes from ``offset``; False (nothing stored) unless ``offset`` is where the stored
        copy ends: another writer has moved it."""

        def work(connection: PgConnection) -> bool:
            connection.execute(_LOCK, (session_id,))
            row = connection.execute(_STORED_LENGTH, (session_id,)).fetchone()
            if row is None or int(row["length"]) != offset:
                return False
            connection.execute(
                "INSERT INTO transcripts (session_id, byte_offset, raw_length, data, host, stored_at) "
                f"VALUES (%s, %s, %s, %s, %s, {_NOW})",
                (session_id, offset, len(raw), zlib.compress(raw), self.host),
            )
            return True

        return self._server.transaction(f"storing {len(raw)} bytes of transcript {session_id}", work)

    def read(self, session_id: str) -> tuple[bytes, str | None]:
        """The stored transcript (empty when none) and the host that stored its last piece."""

        def query(connection: PgConnection) -> tuple[bytes, str | None]:
            rows = connection.execute(
                "SELECT byte_offset, raw_length, data, host FROM transcripts WHERE session_id = %s "
                "ORDER BY byte_offset",
                (session_id,),
            ).fetchall()
            pieces: list[bytes] = []
            length, host = 0, None
            for row in rows:
                if int(row["byte_offset"]) != length:
                    break  # appends are fenced, so a gap means rows were deleted: keep the whole prefix
                piece = zlib.decompress(bytes(row["data"]))
                pieces.append(piece)
                length += len(piece)
                host = str(row["host"])
            return b"".join(pieces), host

        return self._server.transaction(f"reading transcript {session_id}", query)


class Checkpointer:
    """One running session's transcript file, copied into the store as it grows."""

    def __init__(self, stored: StoredTranscripts, path: Path, session_id: str, *, max_bytes: int) -> None:
        self._stored = stored
        self._path = path
        self._session_id = session_id
        self._max_bytes = max_bytes
        self._offset: int | None = None
        self.stopped: str | None = None
        """Why it copies no more (None while it does)."""

    @property
    def stored_bytes(self) -> int:
        return self._offset or 0

    def checkpoint(self) -> int:
        """Copy the whole lines written since the last copy; how many bytes were stored. Raises StoreUnavailable."""
        if self.stopped is not None:
            return 0
        if self._offset is None:
            self._offset = self._stored.stored_length(self._session_id)
        try:
            with self._path.open("rb") as transcript:
                transcript.seek(self._offset)
                fresh = transcript.read(max(0, self._max_bytes - self._offset) + 1)
        except FileNotFoundError:
            return 0  # not written yet
        whole = fresh[: fresh.rfind(b"\n") + 1]
        if self._offset + len(fresh) > self._max_bytes:
            whole = whole[: max(0, self._max_bytes - self._offset)]
            whole = whole[: whole.rfind(b"\n") + 1]
            self._stop(f"it reached transcript_checkpoint_max_bytes ({self._max_bytes} bytes)")
        if not whole:
            return 0
        if not self._stored.append(self._session_id, self._offset, whole):
            self._stop("another host has written this session's stored transcript since (it took the job over)")
            return 0
        self._offset += len(whole)
        return len(whole)

    async def keep_checkpointing(self, interval: float) -> None:
        """Checkpoint every ``interval`` until cancelled, then once more (shielded): the run's end is kept too."""
        try:
            while self.stopped is None:
                await anyio.sleep(interval)
                await self._checkpoint_logged()
        finally:
            with anyio.CancelScope(shield=True):
                await self._checkpoint_logged()

    async def _checkpoint_logged(self) -> None:
        try:
            await anyio.to_thread.run_sync(self.checkpoint)
        except StoreUnavailable as exc:
            # A later checkpoint copies what this one missed: nothing is lost but time.
            logger.warning("session=%s transcript checkpoint: %s", self._session_id, exc)

    def _stop(self, why: str) -> None:
        self.stopped = why
        logger.warning(
            "session=%s its transcript is no longer copied into the store: %s; stored: %d bytes",
            self._session_id,
            why,
            self.stored_bytes,
        )


class TranscriptSource(NamedTuple):
    """Where a resumed attempt's transcript came from, or why there is none to resume."""

    available: bool
    explanation: str

    def describe(self) -> str:
        return self.explanation


def restore_transcript(
    stored: StoredTranscripts, claude_config_dir: Path, cwd: Path, session_id: str
) -> TranscriptSource:
    """Make the session's transcript resumable here, at ``cwd``'s path in ``claude_config_dir``.

    The local file is kept when it starts with every stored byte (it is the same session, as long or
    longer); otherwise the stored copy replaces it. Fails open: a store that cannot be read leaves the
    local file as it is, and says so.
    """
    local = transcript_path(claude_config_dir, cwd, session_id)
    try:
        data, writer = stored.read(session_id)
    except StoreUnavailable as exc:
        if local.is_file():
            return TranscriptSource(True, f"this host's transcript (the store could not be read: {exc})")
        return TranscriptSource(False, f"no transcript on this host and the store could not be read: {exc}")
    present = local.read_bytes() if local.is_file() else None
    if present is not None and present.startswith(data):
        return TranscriptSource(True, f"this host's transcript ({len(present)} bytes)")
    if not data:
        return TranscriptSource(False, f"no transcript of session {session_id} on this host or in the store")
    local.parent.mkdir(parents=True, exist_ok=True)
    partial = local.with_name(f".{local.name}.restoring")
    partial.write_bytes(data)
    partial.replace(local)
    return TranscriptSource(True, f"the store ({len(data)} bytes, last checkpointed by host {writer})")


class TranscriptKeeping:
    """Resume across hosts, for the attempts one worker runs: restore before, checkpoint during and at the end."""

    def __init__(self, stored: StoredTranscripts, claude_config_dir: Path, *, interval: float, max_bytes: int) -> None:
        self.stored = stored
        self._config_dir = claude_config_dir
        self._interval = interval
        self._max_bytes = max_bytes

    @classmethod
    def of(cls, settings: Settings) -> TranscriptKeeping:
        """From ``settings`` (a PostgreSQL store); close it."""
        return cls(
            StoredTranscripts.of(settings),
            settings.claude_config_dir,
            interval=settings.transcript_checkpoint_interval,
            max_bytes=settings.transcript_checkpoint_max_bytes,
        )

    def close(self) -> None:
        self.stored.close()

    def restore(self, work_dir: Path, session_id: str) -> TranscriptSource:
        """``restore_transcript`` at ``work_dir``'s path in this host's config directory."""
        return restore_transcript(self.stored, self._config_dir, work_dir, session_id)

    @contextlib.asynccontextmanager
    async def checkpointing(self, session_id: str, work_dir: Path) -> AsyncGenerator[None]:
        """Copy the session's transcript into the store while the block runs, and once more as it ends."""
        path = transcript_path(self._config_dir, work_dir, session_id)
        checkpointer = Checkpointer(self.stored, path, session_id, max_bytes=self._max_bytes)
        async with anyio.create_task_group() as group:
            group.start_soon(checkpointer.keep_checkpointing, self._interval)
            try:
                yield
            finally:
                group.cancel_scope.cancel()
