"""A dispatching process for the queue tests: many dispatches at once from one process, in queue mode.

``python -m tests.support.queue_dispatcher RECIPE INPUT CALLERS NAME...`` opens this host's runtime and the
queue launcher (settings from the environment), prints ``ready``, waits for a line on stdin (so the test starts
every process's callers together), then runs CALLERS concurrent dispatches of each NAME and prints one JSON
line per outcome.
"""

from __future__ import annotations

import sys

import anyio

from expeditor.config import load_settings
from expeditor.dispatch import DispatchService
from expeditor.queue.launcher import open_queue_launcher
from expeditor.recipes.commands import parse_inputs
from expeditor.runs import CallerContext, open_runtime


async def main(recipe: str, given: str, callers: int, names: list[str]) -> None:
    settings = load_settings()
    inputs = parse_inputs([given])
    async with open_runtime(settings, owner_kind="dispatch") as runtime, open_queue_launcher(runtime) as launcher:
        service = DispatchService(runtime, launcher=launcher)
        print("ready", flush=True)
        await anyio.to_thread.run_sync(sys.stdin.readline)

        async def one(name: str) -> None:
            outcome = await service.dispatch("camp", name, recipe, inputs, caller=CallerContext(None, None))
            print(outcome.model_dump_json(include={"name", "dispatch_id", "attempts", "status", "already_running"}))

        async with anyio.create_task_group() as tasks:
            for _ in range(callers):
                for name in names:
                    tasks.start_soon(one, name)


if __name__ == "__main__":
    anyio.run(main, sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:], backend="asyncio")
