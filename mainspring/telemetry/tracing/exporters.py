"""Where spans go: the exporter ``OTEL_*`` settings name, wrapped so that failures stay quiet.

:func:`make_exporter` picks OTLP over HTTP or gRPC, the console or memory; an
OTLP exporter is wrapped in a :class:`SafeExporter`, so a collector that is down
costs a rate-limited warning and never reaches a run.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Final
from urllib.parse import urlsplit

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import (
    ConsoleSpanExporter,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

log = logging.getLogger("mainspring.telemetry")

_EXPORTER_LOGGERS: Final = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)
_WARN_EVERY: Final = 60.0  # seconds between repeated "cannot export" warnings


class SafeExporter(SpanExporter):
    """Wraps an exporter so that failures are one rate-limited warning and nothing else."""

    def __init__(self, inner: SpanExporter, target: str) -> None:
        self.inner = inner
        self.target = target
        self.failed = 0  # spans that could not be exported
        self._warned = 0.0
        self._aborted = False
        self._shut = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self._aborted:
            self.failed += len(spans)
            return SpanExportResult.FAILURE
        try:
            result = self.inner.export(spans)
        except Exception as exc:
            log.debug("span export raised", exc_info=exc)
            result = SpanExportResult.FAILURE
        if result is SpanExportResult.FAILURE:
            self.failed += len(spans)
            now = time.monotonic()
            if now - self._warned > _WARN_EVERY:
                self._warned = now
                log.warning(
                    "cannot export spans to %s (%d dropped so far); runs are not affected",
                    self.target,
                    self.failed,
                )
        return result

    def abort(self) -> None:
        """Stop retrying now (a dead collector at shutdown)."""
        self._aborted = True
        self.shutdown()

    def shutdown(self) -> None:
        if not self._shut:
            self._shut = True
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _Downgrade(logging.Filter):
    """The OTLP exporters log a failed export as an error; for us it is a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.WARNING:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_DOWNGRADE: Final = _Downgrade()


def make_exporter(
    kind: str | None = None,
    *,
    endpoint: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float | None = None,
) -> SpanExporter | None:
    """The exporter ``kind`` names, or the one ``OTEL_TRACES_EXPORTER`` names (default ``otlp``).

    Kinds: ``otlp`` (protocol from ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or
    ``OTEL_EXPORTER_OTLP_PROTOCOL``: ``http/protobuf`` by default, or ``grpc``),
    ``otlp-http``, ``otlp-grpc``, ``console``, ``memory``; ``none`` gives None.
    Endpoint, headers and timeout default to the standard ``OTEL_EXPORTER_OTLP_*``
    variables, read by the exporters themselves.
    """
    kind = (kind or os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(",")[0].strip().lower()
    if kind == "otlp":
        protocol = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get(
            "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
        )
        kind = "otlp-grpc" if protocol.strip().lower() == "grpc" else "otlp-http"
    if kind == "none":
        return None
    if kind == "console":
        return ConsoleSpanExporter()
    if kind == "memory":
        return InMemorySpanExporter()
    inner: SpanExporter
    if kind == "otlp-http":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
            OTLPSpanExporter as HttpExporter,
        )

        if endpoint is not None and urlsplit(endpoint).path in ("", "/"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        inner = HttpExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    elif kind == "otlp-grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        insecure = None if endpoint is None else endpoint.startswith("http://")
        inner = GrpcExporter(endpoint=endpoint, insecure=insecure, headers=headers, timeout=timeout)
    else:
        raise ValueError(
            f"unknown span exporter {kind!r}; use otlp, otlp-http, otlp-grpc, console, memory or none"
        )
    for name in _EXPORTER_LOGGERS:
        logging.getLogger(name).addFilter(_DOWNGRADE)
    return SafeExporter(inner, endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or kind)
