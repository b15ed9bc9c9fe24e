"""Structured log lines carry the ids of the request, workflow or activity they belong to."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.client import OutboundInterceptor, QueryWorkflowInput, StartWorkflowInput
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from api.auth import Principal, Role
from switchyard.logs import ConsoleFormatter, JsonFormatter, bind, configure_logging, log_context
from switchyard.settings import Settings
from temporal_client.client import WorkflowIdLogTag

LOGGER = "switchyard.test.obs"


class Lines:
    """Captures what the root logger writes through a formatter, one parsed line each."""

    def __init__(self, formatter: logging.Formatter) -> None:
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(formatter)

    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line]

    def text(self) -> list[str]:
        return self.stream.getvalue().splitlines()


@pytest.fixture
def lines() -> Iterator[Lines]:
    captured = Lines(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(captured.handler)
    root.setLevel(logging.INFO)
    try:
        yield captured
    finally:
        root.removeHandler(captured.handler)
        root.setLevel(level)


def test_request_lines_carry_request_principal_coordination_and_workflow_ids(
    lines: Lines,
) -> None:
    state: dict[str, Any] = {}
    log = logging.getLogger(LOGGER)
    with log_context(state=state, request_id="req-42"):
        log.info("before authentication")
        state["principal"] = Principal(subject="alice", roles=frozenset({Role.operator}))
        bind(coordination_id="coordination_1_abc")
        bind(workflow_id="recovery:stripe:s1")
        log.info("decided", extra={"node": "stripe_primary_us_east"})
    log.info("outside any request")

    first, second, outside = lines.json()
    assert first["request_id"] == "req-42" and "principal" not in first
    assert second["message"] == "decided"
    assert second["request_id"] == "req-42"
    assert second["principal"] == "alice"
    assert second["coordination_id"] == "coordination_1_abc"
    assert second["workflow_id"] == "recovery:stripe:s1"
    assert second["node"] == "stripe_primary_us_east"  # extras become fields
    assert second["level"] == "info" and second["logger"] == LOGGER
    assert not {"request_id", "principal", "workflow_id"} & set(outside)


def test_exceptions_stay_inside_one_json_line(lines: Lines) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger(LOGGER).exception("it failed")
    (line,) = lines.json()
    assert "ValueError: boom" in line["exception"]


def test_console_format_puts_the_ids_after_the_message() -> None:
    captured = Lines(ConsoleFormatter())
    log = logging.getLogger(LOGGER + ".console")
    log.addHandler(captured.handler)
    log.propagate = False
    log.setLevel(logging.INFO)
    try:
        with log_context(request_id="req-7"):
            bind(workflow_id="emergency:twilio")
            log.info("hello")
    finally:
        log.removeHandler(captured.handler)
    (text,) = captured.text()
    assert text.endswith("hello [request_id=req-7 workflow_id=emergency:twilio]")
    assert not text.startswith("{")


def test_configure_logging_picks_the_format(tmp_path: Any) -> None:
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    try:
        configure_logging(Settings(home=tmp_path, log_format="console", log_level="WARNING"))
        assert isinstance(root.handlers[0].formatter, ConsoleFormatter)
        assert root.level == logging.WARNING
        configure_logging(Settings(home=tmp_path))
        assert isinstance(root.handlers[0].formatter, JsonFormatter)
        assert len(root.handlers) == 1
        assert logging.getLogger("uvicorn.access").propagate
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        workflow.logger.workflow_info_on_message = True
        activity.logger.activity_info_on_message = True


def test_activity_lines_carry_the_workflow_id(lines: Lines) -> None:
    def act() -> None:
        activity.logger.info("through temporal's activity logger")
        logging.getLogger(LOGGER).info("through a plain logger")

    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id="recovery:maps:s9", activity_type="probe")
    env.run(act)
    via_adapter, plain = lines.json()
    for line in (via_adapter, plain):
        assert line["workflow_id"] == "recovery:maps:s9"
        assert line["activity_type"] == "probe"


# Unsandboxed: the sandbox cannot re-import a test module; workflow.logger is the same object.
@workflow.defn(sandboxed=False)
class LoggingWorkflow:
    """Logs one line through workflow.logger."""

    @workflow.run
    async def run(self) -> None:
        workflow.logger.info("workflow says hello")


async def test_workflow_lines_carry_the_workflow_id(
    lines: Lines, time_env: WorkflowEnvironment
) -> None:
    queue = f"obs-logs-{uuid.uuid4().hex[:8]}"
    workflow_id = f"obs-log-{uuid.uuid4().hex[:8]}"
    async with Worker(time_env.client, task_queue=queue, workflows=[LoggingWorkflow]):
        await time_env.client.execute_workflow(
            LoggingWorkflow.run,
            id=workflow_id,
            task_queue=queue,
            execution_timeout=timedelta(seconds=30),
        )
    said = [line for line in lines.json() if line["message"].startswith("workflow says hello")]
    assert said, lines.json()
    assert said[0]["workflow_id"] == workflow_id
    assert said[0]["workflow_type"] == "LoggingWorkflow"


class _Recording(OutboundInterceptor):
    """The end of the client's interceptor chain: records what reached it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start_workflow(self, input: StartWorkflowInput) -> Any:
        self.calls.append(input.id)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        self.calls.append(input.id)


async def test_client_calls_tag_the_request_with_their_workflow_id() -> None:
    end = _Recording()
    chain = WorkflowIdLogTag().intercept_client(end)
    query = QueryWorkflowInput(
        id="recovery:stripe:s3",
        run_id=None,
        query="status",
        args=[],
        reject_condition=None,
        headers={},
        ret_type=None,
        rpc_metadata={},
        rpc_timeout=None,
    )
    with log_context(request_id="req-9") as context:
        await chain.query_workflow(query)
    assert end.calls == ["recovery:stripe:s3"]
    assert context.resolved()["workflow_id"] == "recovery:stripe:s3"
    await chain.query_workflow(query)  # outside a request: passes through, binds nothing
    assert end.calls == ["recovery:stripe:s3"] * 2
