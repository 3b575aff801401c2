"""The report tool: what a campaign's sessions cost, per step and per model."""

from __future__ import annotations

from typing import Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from expeditor.reports import UsageReport, campaign_report, render_json, render_markdown
from expeditor.server.boundary import tool_errors
from expeditor.server.state import ServerState

__all__ = ["TokenReport", "register_report_tools"]


class TokenReport(BaseModel):
    text: str = Field(description="The report rendered in the format asked for.")
    report: UsageReport


def register_report_tools(server: MCPServer[Any]) -> None:
    @server.tool()
    async def token_report(
        campaign_id: str,
        ctx: Context,
        job_name: str | None = None,
        format: Literal["markdown", "json"] = "markdown",
    ) -> TokenReport:
        """The token usage of a campaign (or of one job of it, `job_name`): every session it ran, including
        the run_skill calls its orchestrators made, per step (sessions, uncached input, output, cache
        reads and writes, peak context, turns, wall time), per line of code changed, and per model.
        `text` is ready to paste into a pull request as markdown (or is JSON); `report` has the exact
        figures. Steps marked * ran on a provider other than Anthropic; † marks incomplete figures."""
        state = ServerState.of(ctx)
        with tool_errors("token_report"):
            report = await anyio.to_thread.run_sync(campaign_report, state.store, campaign_id, job_name)
        if not report.steps:
            scope = f"job {job_name!r} of campaign {campaign_id!r}" if job_name else f"campaign {campaign_id!r}"
            raise ToolError(f"no agent sessions recorded for {scope}: list_dispatches shows the jobs a campaign has")
        text = render_markdown(report) if format == "markdown" else render_json(report)
        return TokenReport(text=text, report=report)
