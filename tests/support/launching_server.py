"""A process that launches one supervised session and waits for it, for tests that kill it mid-run.

``python -m tests.support.launching_server TMP_PATH SCENARIO_JSON [CONTAINMENT [SETTINGS_JSON]]`` opens a
runtime with the fake agent's quiet settings (and SETTINGS_JSON's) under TMP_PATH, launches one session
following SCENARIO_JSON and waits for it; the test kills this process (SIGKILL, or its whole process
group) to play a server that dies.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio

from expeditor.runs import CallerContext, open_runtime
from tests.support.fake import fake_settings, scenario_request


async def main(tmp_path: Path, scenario: str, containment: str, overrides: str) -> None:
    settings = fake_settings(tmp_path, containment=containment, **json.loads(overrides))
    async with open_runtime(settings) as runtime:
        request = scenario_request(tmp_path, {}, env={"EXPEDITOR_FAKE_SCENARIO": scenario})
        await runtime.supervisor.run(request, CallerContext(None, None))


if __name__ == "__main__":
    containment = sys.argv[3] if len(sys.argv) > 3 else "auto"
    anyio.run(main, Path(sys.argv[1]), sys.argv[2], containment, sys.argv[4] if len(sys.argv) > 4 else "{}")
