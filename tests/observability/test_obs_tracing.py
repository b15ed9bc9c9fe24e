"""With tracing on, backend-agent-error is one trace: HTTP request → update-with-start →
workflow → activities, across the API's and the worker's Temporal clients."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.auth import Role
from switchyard import tracing
from switchyard.settings import Settings
from temporal_client.client import connect
from worker.main import build_worker

pytestmark = pytest.mark.devserver
BASE = "/api/v1/enhanced-traffic-coordination"


def test_tracing_is_off_without_an_endpoint(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    assert tracing.tracer_provider(settings, "switchyard-test") is None
    assert tracing.temporal_interceptors(settings, "switchyard-test") == []
    assert tracing.current_trace_id() is None


def test_traces_go_to_the_collectors_traces_path() -> None:
    assert tracing.traces_url("http://collector:4318") == "http://collector:4318/v1/traces"
    assert tracing.traces_url("http://collector:4318/v1/traces") == (
        "http://collector:4318/v1/traces"
    )


async def test_backend_agent_error_is_one_trace_through_workflow_and_activities(
    dev_env: WorkflowEnvironment,
    clean_store: Engine,
    make_settings: Callable[..., Settings],
    auth: Callable[..., dict[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    settings = make_settings(
        temporal_address=dev_env.client.service_client.config.target_host,
        otlp_endpoint="http://127.0.0.1:1",  # on; the in-memory provider stands in for it
    )
    stream = f"trace_{uuid.uuid4().hex[:8]}"
    body = {
        "errorType": "service_unavailable",
        "serviceName": "maps",
        "severity": "high",
        "errorDetails": {"failedProviders": ["mapbox_primary"]},
        "streamId": stream,
    }
    worker_client = await connect(settings, service_name="switchyard-worker")
    with ThreadPoolExecutor(32) as executor:
        async with build_worker(worker_client, settings, executor):
            with TestClient(create_app(settings, prepare=False)) as http:
                response = await asyncio.to_thread(
                    http.post, f"{BASE}/backend-agent-error", json=body, headers=auth(Role.operator)
                )
    assert response.status_code == 200, response.text
    workflow_id = response.json()["data"]["backendAgentResponse"]["workflowId"]
    assert workflow_id == f"recovery:maps:{stream}"

    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind is SpanKind.SERVER and "backend-agent-error" in s.name]
    assert len(server) == 1, [s.name for s in spans]
    trace_id = server[0].context.trace_id
    names = {s.name for s in spans if s.context.trace_id == trace_id}
    assert "StartUpdateWithStartWorkflow:ErrorRecoveryWorkflow" in names, names
    assert "RunWorkflow:ErrorRecoveryWorkflow" in names, names
    assert any(n.startswith("HandleUpdate:") for n in names), names
    assert any(n.startswith("RunActivity:") for n in names), names
    # Nothing of this request's work landed in another trace.
    strays = {
        s.name
        for s in spans
        if s.context.trace_id != trace_id and "ErrorRecoveryWorkflow" in s.name
    }
    assert strays == set()
