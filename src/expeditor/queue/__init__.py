"""Dispatch workers on many hosts, on procrastinate (the ``queue`` extra).

In queue mode (``dispatch_mode: queue``) a dispatch's claim defers a ``run_dispatch`` job in the shared
PostgreSQL store (``tasks``), and the dispatching call waits for it (``launcher``); ``expeditor worker`` on
each host runs jobs through the same attempt as a local dispatch (``worker``), recovers the jobs of silent
workers (``recovery``) and kills its own sessions when cut off from the database (``fencing``).

This module imports nothing of the extra at import, so a process without it can say what is missing
(``require_queue``).
"""

from __future__ import annotations

from expeditor.queue.extra import QUEUE_EXTRA, queue_missing, require_queue

__all__ = ["QUEUE_EXTRA", "queue_missing", "require_queue"]
