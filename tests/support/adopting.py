"""A subreaper that adopts orphans, then reaps and kills them as the server does; prints what it saw as JSON.

``python -m tests.support.adopting LIVE_SESSION``: becomes a subreaper, starts a middle process that starts
three grandchildren and exits: one exits at once, one sleeps tagged with LIVE_SESSION, one sleeps tagged
with an ended session. The orphans are adopted by this process, which then runs one round of the
reaper with LIVE_SESSION live.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from expeditor.runs import become_subreaper, kill_leftovers, reap_exited


def _orphans(live: str) -> dict[str, int]:
    script = (
        "import os, subprocess, sys, json\n"
        "kept = []  # no Popen finalizer may run: it would collect an exited child itself\n"
        "def start(argv, tag):\n"
        "    env = dict(os.environ, EXPEDITOR_SESSION_ID=tag) if tag else dict(os.environ)\n"
        "    quiet = subprocess.DEVNULL  # not our pipes: the middle's output must end when it exits\n"
        "    kept.append(subprocess.Popen(argv, env=env, start_new_session=True, stdout=quiet, stderr=quiet))\n"
        "    return kept[-1].pid\n"
        f"pids = {{'exited': start(['/bin/true'], None), 'live': start(['/bin/sleep', '60'], {live!r}),"
        " 'ended': start(['/bin/sleep', '60'], 'ended-session')}\n"
        "print(json.dumps(pids), flush=True)\n"
        "os._exit(0)\n"
    )
    middle = subprocess.run([sys.executable, "-c", script], capture_output=True, check=True, text=True)
    return json.loads(middle.stdout)


def main(live: str) -> None:
    assert become_subreaper()
    pids = _orphans(live)
    deadline = time.monotonic() + 5
    reaped: list[int] = []
    while pids["exited"] not in reaped and time.monotonic() < deadline:
        reaped += reap_exited(set())
        time.sleep(0.01)
    killed = kill_leftovers(set(), lambda: [live])
    for pid in killed:
        os.waitpid(pid, 0)
    print(json.dumps({"pids": pids, "reaped": reaped, "killed": killed}))
    for pid in (pids["live"], pids["ended"]):
        try:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass


if __name__ == "__main__":
    main(sys.argv[1])
