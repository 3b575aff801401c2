"""`expeditor dispatch` of a pipeline recipe with ``EXPEDITOR_STORE_URL`` set, as real processes on the fake agent.

Everything lands in PostgreSQL (the pipeline runner child opens the same store, from a URL without its
password and the password file), nothing in a SQLite file, and ``status`` and ``report`` read it back.
The URL's password appears in no file expeditor wrote, no output, no error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from psycopg.rows import dict_row

from expeditor.testing import launched_prompts
from tests.support.fake import FAKE_AGENT_COMMAND
from tests.support.postgres import STORE_SCHEMA, PostgresServer

TRIO = """\
name: trio
description: three skill steps, run by the pipeline runner
orchestrator: pipeline
steps:
  one: {skill: /one}
  two: {skill: /two}
  three: {skill: /three}
"""


def expeditor(tmp_path: Path, store_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{name: value for name, value in os.environ.items() if not name.startswith("PG")},
        "EXPEDITOR_CLAUDE_COMMAND": FAKE_AGENT_COMMAND,
        "EXPEDITOR_CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "EXPEDITOR_ALLOWED_ROOTS": str(tmp_path),
        "EXPEDITOR_KILL_GRACE": "0.5",
        "EXPEDITOR_FAKE_LOG": str(tmp_path / "agent.log"),
        "EXPEDITOR_STORE_URL": store_url,
        "EXPEDITOR_STORE_TIMEOUT": "3",
        # Where a child, given the URL without its password, finds it (libpq's password file).
        "PGPASSFILE": str(tmp_path / "pgpass"),
    }
    return subprocess.run(
        [sys.executable, "-m", "expeditor", "--home", str(tmp_path / "home"), *args],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )


def rows(url: str, query: LiteralString) -> list[dict[str, Any]]:
    with psycopg.connect(url) as connection:
        connection.execute(f"SET search_path TO {STORE_SCHEMA}")
        return connection.cursor(row_factory=dict_row).execute(query).fetchall()


def test_a_pipeline_dispatched_with_a_store_url_is_recorded_in_postgresql_and_read_back(
    tmp_path: Path, postgres_server: PostgresServer, pg_database_url: str
) -> None:
    password = postgres_server.password
    database = pg_database_url.rpartition("/")[2]
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{postgres_server.port}:{database}:{postgres_server.user}:{password}\n")
    passfile.chmod(0o600)
    (tmp_path / "home" / "recipes").mkdir(parents=True)
    (tmp_path / "home" / "recipes" / "trio.yaml").write_text(TRIO)

    dispatched = expeditor(tmp_path, pg_database_url, "dispatch", "nightly", "job", "--recipe", "trio", "--cwd", ".")
    assert dispatched.returncode == 0, dispatched.stderr
    assert [prompt.split()[0] for prompt in launched_prompts(tmp_path / "agent.log")] == ["/one", "/two", "/three"]

    (record,) = rows(pg_database_url, "SELECT * FROM dispatches")
    assert (record["campaign_id"], record["name"], record["status"]) == ("nightly", "job", "success")
    steps = rows(pg_database_url, "SELECT step, status FROM step_executions ORDER BY sequence")
    assert steps == [{"step": step, "status": "success"} for step in ("one", "two", "three")]
    runs = rows(pg_database_url, "SELECT kind, status, dispatch_id FROM runs ORDER BY started_at")
    # The pipeline runner's own run (recorded by the dispatching process), then its three steps' runs,
    # recorded by the pipeline runner child through the same PostgreSQL store.
    assert [run["kind"] for run in runs] == ["pipeline", "skill", "skill", "skill"]
    assert {run["status"] for run in runs} == {"success"}
    assert not any(tmp_path.rglob("state.sqlite3*"))

    status = expeditor(tmp_path, pg_database_url, "status", "--campaign", "nightly")
    assert status.returncode == 0, status.stderr
    assert "job" in status.stdout
    assert "success" in status.stdout
    report = expeditor(tmp_path, pg_database_url, "report", "nightly", "--format", "json")
    assert report.returncode == 0, report.stderr
    assert [step["step"] for step in json.loads(report.stdout)["steps"]] == ["one", "two", "three"]

    # The same commands against a wrong password: lookups fail open, naming the server, not the secret.
    wrong = postgres_server.url(database, password="wrong-" + password)
    refused = expeditor(tmp_path, wrong, "status", "--campaign", "nightly")
    assert f"{postgres_server.user}@127.0.0.1:{postgres_server.port}/{database}" in refused.stderr

    outputs = [text for done in (dispatched, status, report, refused) for text in (done.stdout, done.stderr)]
    written = [
        path.read_text(errors="replace")
        for path in (tmp_path / "home").rglob("*")
        if path.is_file() and path.suffix not in (".sqlite3",)
    ]
    written.append((tmp_path / "agent.log").read_text())
    for text in outputs + written:
        assert password not in text
