"""The queue's part of the command line: ``expeditor worker``, ``db migrate``'s queue half, and the launcher a
queue-mode ``dispatch`` uses. Nothing of the extra is imported until a command needs it and it is there."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TextIO

from expeditor.config import Settings
from expeditor.logs import configure_logging
from expeditor.queue import QUEUE_EXTRA, queue_missing, require_queue

if TYPE_CHECKING:  # the dispatch service is imported by the commands that dispatch, not by every command
    from expeditor.dispatch import LauncherFactory

__all__ = ["add_cancel_command", "add_worker_command", "dispatch_launcher", "migrate_queue_too"]

SettingsOf = Callable[..., Settings]


def add_worker_command(commands: Any, settings_of: Callable[[argparse.Namespace], SettingsOf]) -> None:
    """Add ``expeditor worker`` to ``commands`` (argparse's subparsers); ``settings_of(args)(**overrides)``."""
    worker = commands.add_parser(
        "worker",
        help="run queued dispatches on this host (dispatch_mode queue, a PostgreSQL store, the queue extra)",
        description="Take dispatches from the job queue in the shared PostgreSQL store and run them on this host, "
        "as many at once as it has slots, until SIGINT or SIGTERM (then every session is killed and its job "
        "queued again for another host). Run one per host.",
    )
    worker.add_argument("--slots", type=_slots, help="sessions run at once (default: max_concurrent_dispatches)")
    worker.add_argument("--host-name", help="this host as records name it (default: the host_name setting)")
    worker.add_argument("--queue", help="the job queue to take dispatches from (default: the dispatch_queue setting)")

    def handler(args: argparse.Namespace) -> int:
        return _worker(args, settings_of(args))

    worker.set_defaults(handler=handler)


def add_cancel_command(commands: Any, settings_of: Callable[[argparse.Namespace], SettingsOf]) -> None:
    """Add ``expeditor cancel`` (``cancel.cancel_command``) to ``commands``."""
    cancel = commands.add_parser(
        "cancel",
        help="stop a dispatched job wherever it runs, or before it runs (shared store, queue mode)",
        description="Stop a queued dispatch on whichever host's worker runs it (its session's tree is killed and "
        "it is recorded cancelled), or before a worker takes it (it never launches).",
    )
    cancel.add_argument("campaign", nargs="?", help="the job's campaign")
    cancel.add_argument("name", nargs="?", help="the job's name")
    cancel.add_argument("--session", metavar="ID", help="the dispatched job's session id, instead of CAMPAIGN NAME")

    def handler(args: argparse.Namespace) -> int:
        settings = settings_of(args)()
        configure_logging(settings)
        from expeditor.queue.cancel import cancel_command  # with the store, only once a command needs it

        return cancel_command(settings, args.campaign, args.name, session=args.session, out=sys.stdout)

    cancel.set_defaults(handler=handler)


def _slots(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of slots: expected a whole number from 1 to 1024")
    return int(text)


def _worker(args: argparse.Namespace, settings_of: SettingsOf) -> int:
    overrides = {
        setting: value
        for setting, value in (
            ("max_concurrent_dispatches", args.slots),
            ("host_name", args.host_name),
            ("dispatch_queue", args.queue),
        )
        if value is not None
    }
    settings = settings_of(**overrides)
    require_queue(settings, what="expeditor worker")
    configure_logging(settings)
    # The queue extra (procrastinate) is imported only once it is known to be there.
    from expeditor.queue.worker import worker_command

    return worker_command(settings, queue=None, err=sys.stderr)


def migrate_queue_too(settings: Settings, out: TextIO) -> int:
    """After the store's migration: the job queue's, when the extra is installed (else one line saying so)."""
    missing = queue_missing()
    if missing is not None:
        out.write(f"job queue: not migrated, {missing} (for expeditor worker: {QUEUE_EXTRA})\n")
        return 0
    from expeditor.queue.schema import migrate_queue_command

    return migrate_queue_command(settings, out)


def dispatch_launcher(settings: Settings) -> LauncherFactory | None:
    """The launcher ``expeditor dispatch`` uses: the queue's in queue mode (refused at once if unusable), else None."""
    if settings.dispatch_mode != "queue":
        return None
    require_queue(settings, what="dispatch_mode queue")
    from expeditor.queue.app import check_queue_schema
    from expeditor.queue.launcher import open_queue_launcher

    # Before the runtime opens: on a database never migrated, its store would warn first (several lines).
    check_queue_schema(settings)
    return open_queue_launcher


def check_serving(settings: Settings, env: Mapping[str, str]) -> None:
    """Before a server starts in queue mode: refuse at once, in one line, what its lifespan could not open.

    A session's nested server is left alone: it opens no queue (no launched session may dispatch).
    """
    if settings.dispatch_mode != "queue" or env.get("EXPEDITOR_SESSION_KIND"):
        return
    require_queue(settings, what="dispatch_mode queue")
    from expeditor.queue.app import check_queue_schema

    check_queue_schema(settings)
