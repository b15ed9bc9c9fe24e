"""The Temporal client every Switchyard process uses."""

from __future__ import annotations

import logging
from functools import cache
from typing import Any

from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    QueryWorkflowInput,
    SignalWorkflowInput,
    StartWorkflowInput,
    StartWorkflowUpdateInput,
    StartWorkflowUpdateWithStartInput,
    WorkflowHandle,
    WorkflowUpdateHandle,
)
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    PrometheusConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

from store.crypto import Keyring
from switchyard.logs import bind
from switchyard.settings import Settings
from switchyard.tracing import temporal_interceptors
from temporal_client.codec import encrypted_data_converter


def sdk_runtime(metrics_address: str = "") -> Runtime:
    """A Temporal SDK runtime whose Core logs go through Python logging (so they are
    structured like every other line), serving the SDK's metrics for Prometheus at
    `metrics_address` (host:port) when one is given."""
    logging_config = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    metrics = PrometheusConfig(bind_address=metrics_address) if metrics_address else None
    return Runtime(telemetry=TelemetryConfig(logging=logging_config, metrics=metrics))


@cache
def _shared_runtime() -> Runtime:
    return sdk_runtime()


async def connect(
    settings: Settings, *, runtime: Runtime | None = None, service_name: str = "switchyard"
) -> Client:
    """Connect with the pydantic data converter, the payload encryption codec, the workflow
    id log tag and (when tracing is on) the tracing interceptor, which workers inherit."""
    interceptors: list[Interceptor] = [
        WorkflowIdLogTag(),
        *temporal_interceptors(settings, service_name),
    ]
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        data_converter=encrypted_data_converter(Keyring.parse(settings.encryption_keys)),
        interceptors=interceptors,
        runtime=runtime or _shared_runtime(),
    )


class WorkflowIdLogTag(Interceptor):
    """Tags the current request's log lines with the id of each workflow a call acts on."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        """Wrap the client's outbound calls."""
        return _BindWorkflowId(next)


class _BindWorkflowId(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        bind(workflow_id=input.id)
        return await super().start_workflow(input)

    async def start_update_with_start_workflow(
        self, input: StartWorkflowUpdateWithStartInput
    ) -> WorkflowUpdateHandle[Any]:
        bind(workflow_id=input.start_workflow_input.id)
        return await super().start_update_with_start_workflow(input)

    async def start_workflow_update(
        self, input: StartWorkflowUpdateInput
    ) -> WorkflowUpdateHandle[Any]:
        bind(workflow_id=input.id)
        return await super().start_workflow_update(input)

    async def query_workflow(self, input: QueryWorkflowInput) -> Any:
        bind(workflow_id=input.id)
        return await super().query_workflow(input)

    async def signal_workflow(self, input: SignalWorkflowInput) -> None:
        bind(workflow_id=input.id)
        await super().signal_workflow(input)
