"""Span records to OpenTelemetry: the tracer listener and the export behind it (the telemetry extra).

* :mod:`.tracer`: :class:`~.tracer.JournalTracer`, the runtime listener that feeds
  the journal to :class:`~mainspring.telemetry.spans.derive.SpanBuilder` and turns
  the spans it closes into OpenTelemetry spans, and ``setup_tracing``;
* :mod:`.batch_export`: the export thread, fed whole batches, recording in the
  store how far each run's spans got out;
* :mod:`.exporters`: the exporter ``OTEL_*`` settings name, made to fail quietly.
"""
