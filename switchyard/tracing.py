"""Optional OpenTelemetry tracing: one trace from the HTTP request through the workflow.

Off unless `SWITCHYARD_OTLP_ENDPOINT` names an OTLP/HTTP collector. Then the API gets a span
per request (FastAPI instrumentation) and every Temporal client and worker gets temporalio's
`TracingInterceptor`, which carries the trace context in Temporal headers: the client's
update-with-start span, the workflow's spans and its activities' spans join the request's
trace. The packages come with the `otel` extra (`pip install 'switchyard[otel]'`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from switchyard.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from temporalio.client import Interceptor

# Health checks and scrapes arrive every few seconds; their traces would drown the real ones.
EXCLUDED_URLS = r"/metrics$,/health$"
TRACER_NAME = "switchyard"

# One provider per process, built on first use: its spans are batched and exported at exit.
_provider: TracerProvider | None = None


class TracingUnavailable(RuntimeError):
    """Tracing was asked for but the OpenTelemetry packages are not installed."""


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL for a collector's base address."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/traces") else f"{base}/v1/traces"


def tracer_provider(settings: Settings, service_name: str) -> TracerProvider | None:
    """The process's tracer provider, or None when tracing is off."""
    global _provider
    if not settings.otlp_endpoint:
        return None
    if _provider is None:
        _provider = _build_provider(settings.otlp_endpoint, service_name)
    return _provider


def _build_provider(endpoint: str, service_name: str) -> TracerProvider:
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise TracingUnavailable(
            "SWITCHYARD_OTLP_ENDPOINT is set but OpenTelemetry is not installed: "
            "pip install 'switchyard[otel]'"
        ) from exc
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
    # Libraries that use the global API (and the log formatter's trace ids) see the same one.
    trace.set_tracer_provider(provider)
    return provider


def instrument_app(app: FastAPI, settings: Settings) -> bool:
    """Give every HTTP request a server span when tracing is on; True when it is."""
    provider = tracer_provider(settings, "switchyard-api")
    if provider is None:
        return False
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider, excluded_urls=EXCLUDED_URLS)
    return True


def temporal_interceptors(settings: Settings, service_name: str) -> list[Interceptor]:
    """temporalio's tracing interceptor for a client (its workers inherit it), or none."""
    provider = tracer_provider(settings, service_name)
    if provider is None:
        return []
    from temporalio.contrib.opentelemetry import TracingInterceptor

    return [TracingInterceptor(provider.get_tracer(TRACER_NAME))]


def current_trace_id() -> str | None:
    """The active span's trace id in hex, for log lines; None without tracing or a span."""
    if _provider is None:
        return None
    from opentelemetry import trace

    context: Any = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None
