"""Spans from journals, before any OpenTelemetry object exists (no optional dependency).

* :mod:`.record`: :class:`~.record.SpanRecord`, what a span is here;
* :mod:`.derive`: the :class:`~.derive.SpanBuilder` state machine over journal events,
  fed live by the tracer and the logger, and :func:`~.derive.derive_spans`, its pure
  form for the CLI: what is traced live is what the journal says, exactly;
* :mod:`.genai`: the OpenTelemetry GenAI attributes of tool and model calls.

The spans (ids: :mod:`mainspring.telemetry.ids`):

* run (``invoke_workflow <graph>``, or ``invoke_agent <agent>`` for a run started
  with ``metadata={"agent": ...}``): ``run_started`` to ``finished`` / ``failed`` /
  ``cancelled``; a subgraph run's parent is the parent task's attempt span;
* node attempt (``node <node>``): ``step_started`` to ``step_finished`` /
  ``step_failed`` / ``interrupted``; each retry and each rerun after a resume is
  a span of its own under the run span. A workflow step is not a GenAI operation,
  so it carries no ``gen_ai.operation.name``: a node that runs an agent is a
  subgraph node, and the agent is its child run's ``invoke_agent`` span;
* effect (``execute_tool <tool>``, ``chat <model>`` or the effect's name):
  ``effect_started`` to ``effect_finished``, under its attempt;
* interrupt wait (``interrupt <node>``): ``interrupted`` to ``resumed``, under the
  run span, linked to the attempt that asked.

A span whose process stopped before it closed (a crash) is closed as
*abandoned* when the journal shows the work starting again.
"""
