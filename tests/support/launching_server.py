"""A process that launches one supervised session and waits for it, for tests that kill it mid-run.

``python -m tests.support.launching_server TMP_PATH SCENARIO_JSON [CONTAINMENT]`` opens a runtime with
the fake agent's quiet settings under TMP_PATH, launches one session following SCENARIO_JSON and
waits for it; the test kills this process (SIGKILL, or its whole process group) to play a server
that dies.
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio

from expeditor.runs import CallerContext, open_runtime
from tests.support.fake import fake_settings, scenario_request


async def main(tmp_path: Path, scenario: str, containment: str) -> None:
    settings = fake_settings(tmp_path, containment=containment)
    async with open_runtime(settings) as runtime:
        request = scenario_request(tmp_path, {}, env={"EXPEDITOR_FAKE_SCENARIO": scenario})
        await runtime.supervisor.run(request, CallerContext(None, None))


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "auto")
