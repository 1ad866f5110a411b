"""Metrics from the journal: counters, histograms and gauges, exposed to Prometheus and OpenTelemetry.

* :mod:`.instruments`: what is measured (names, labels, buckets) and the sink protocol;
* :mod:`.aggregator`: what each journal event means for the instruments;
* :mod:`.prometheus`: :class:`~.prometheus.JournalMetrics`, the runtime listener,
  and its Prometheus registry and ``/metrics`` endpoint (needs prometheus-client);
* :mod:`.otel`: the same observations as OpenTelemetry instruments;
* :mod:`.store_timing`: a store proxy timing journal appends and commits, the one
  thing the journal cannot say about itself;
* :mod:`.poller`: metrics of a store's recent runs without a listener
  (``mainspring metrics --store URL``).
"""
