"""The report tool: what a campaign's sessions cost, per step and per model."""

from __future__ import annotations

import functools
from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import CallToolResult
from pydantic import Field

from expeditor.reports import UsageReport, campaign_report, render_json, render_markdown
from expeditor.server.boundary import tool_errors
from expeditor.server.declare import READ_ONLY, tool
from expeditor.server.params import Campaign
from expeditor.server.results import tool_result
from expeditor.server.state import ServerState

__all__ = ["register_report_tools"]


def register_report_tools(server: MCPServer[Any]) -> None:
    @tool(
        server,
        title="Token usage report",
        annotations=READ_ONLY,
    )
    async def token_report(
        campaign: Campaign,
        ctx: Context,
        job_name: Annotated[
            str | None, Field(min_length=1, description="Only this job of the campaign. Default: every job.")
        ] = None,
        format: Annotated[
            Literal["markdown", "json"],
            Field(description="The text's format: markdown (ready for a pull request) or json."),
        ] = "markdown",
    ) -> Annotated[CallToolResult, UsageReport]:
        """The token usage of a campaign (or of one job of it, `job_name`): every session it ran, including
        the run_skill calls its orchestrators made, per step (sessions, uncached input, output, cache
        reads and writes, peak context, turns, wall time), per line of code changed, and per model.
        The text is the report as markdown, ready to paste into a pull request (or JSON); the structured
        result has the exact figures. Steps marked * ran on a provider other than Anthropic; † marks
        incomplete figures. `campaign_id`, this argument's name before, is still accepted for one release."""
        state = ServerState.of(ctx)
        with tool_errors("token_report"):
            prices = state.settings.model_prices
            report = await anyio.to_thread.run_sync(
                functools.partial(campaign_report, state.store, campaign, job_name, prices=prices)
            )
        if not report.steps:
            scope = f"job {job_name!r} of campaign {campaign!r}" if job_name else f"campaign {campaign!r}"
            raise ToolError(f"no agent sessions recorded for {scope}: list_dispatches shows the jobs a campaign has")
        text = render_markdown(report) if format == "markdown" else render_json(report)
        return tool_result(text, report)
