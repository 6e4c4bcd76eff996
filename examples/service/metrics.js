// Prometheus metrics of what an operator of this service needs: requests by route and
// status, latency histograms, event-loop delay, the native library's queue, the server's
// own queue, memory. prom-client keeps the series and writes the text exposition (format
// 0.0.4); its default Node.js metrics (CPU, heap, GC, handles, resident memory) are
// exposed alongside.
'use strict';
const { monitorEventLoopDelay } = require('node:perf_hooks');
const client = require('prom-client');

// The monitor samples every RESOLUTION_MS and records each whole interval: an idle loop
// reads ~10 ms. The delay exposed is what exceeds the interval.
const RESOLUTION_MS = 10;
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const QUANTILES = [0.5, 0.9, 0.99];
const REJECT_REASONS = ['overload', 'deadline', 'disconnect'];

// prom-client's default metrics describe the process, not one server, and each
// collection of them starts a GC observer and an event-loop monitor that nothing stops.
// They are collected once per process, in a registry of their own (not prom-client's
// global one), and shared by every server's registry.
let processMetrics;
function defaultMetrics() {
  if (!processMetrics) {
    processMetrics = new client.Registry();
    client.collectDefaultMetrics({ register: processMetrics, eventLoopMonitoringPrecision: RESOLUTION_MS });
  }
  return processMetrics.getMetricsAsArray();
}

class Metrics {
  /**
   * @param {{ pendingCalls: () => number, limiter: { active: number, waiting: unknown[] } }} sources
   */
  constructor(sources) {
    // One registry per server: tests build several servers in one process. It throws if
    // two metrics share a name, so each name has one `# TYPE` line.
    const registry = new client.Registry();
    this.registry = registry;
    this.contentType = registry.contentType;
    for (const metric of defaultMetrics()) registry.registerMetric(metric);
    const registers = [registry];

    this.requests = new client.Counter({
      name: 'http_requests_total',
      help: 'Requests answered, by method, route and status code.',
      labelNames: ['method', 'route', 'status'],
      registers,
    });
    this.latency = new client.Histogram({
      name: 'http_request_duration_seconds',
      help: 'Time from arrival to the end of the response, by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.rejections = new client.Counter({
      name: 'encode_rejected_total',
      help: 'Encode requests not run: overload (503, queue full), deadline (504), disconnect (client gone; work cancelled).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REJECT_REASONS) this.rejections.inc({ reason }, 0);

    const { limiter } = sources;
    const gauge = (name, help, read) =>
      new client.Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge('encode_active_requests', 'Encode requests holding an inference slot.', () => limiter.active);
    gauge('encode_queued_requests', 'Encode requests waiting for an inference slot.', () => limiter.waiting.length);
    gauge('performer_native_pending_calls', 'Async calls queued or running in the native thread pool, not yet settled.', () => sources.pendingCalls());

    // Since this server started, unlike prom-client's nodejs_eventloop_lag_* (since the
    // last scrape). A summary whose quantiles come from the monitor's own histogram, so
    // it is registered as a collector: prom-client's Summary computes its own quantiles.
    const eventLoop = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    eventLoop.enable();
    this.eventLoop = eventLoop;
    const beyond = (ns) => Math.max(0, ns / 1e9 - RESOLUTION_MS / 1000);
    const delay = {
      name: 'nodejs_eventloop_delay_seconds',
      help: `Event-loop delay since start: how late a timer sampled every ${RESOLUTION_MS} ms fires (perf_hooks.monitorEventLoopDelay).`,
      type: 'summary',
      aggregator: 'sum',
      get() {
        const n = eventLoop.count;
        return {
          name: delay.name,
          help: delay.help,
          type: delay.type,
          aggregator: delay.aggregator,
          values: [
            ...QUANTILES.map((quantile) => ({ labels: { quantile }, value: n ? beyond(eventLoop.percentile(quantile * 100)) : 0 })),
            { metricName: `${delay.name}_sum`, labels: {}, value: n ? beyond(eventLoop.mean) * n : 0 },
            { metricName: `${delay.name}_count`, labels: {}, value: n },
          ],
        };
      },
      reset() {
        eventLoop.reset();
      },
    };
    registry.registerMetric(delay);
    gauge('nodejs_eventloop_delay_max_seconds', 'Largest event-loop delay since start.', () => (eventLoop.count ? beyond(eventLoop.max) : 0));

    // process_resident_memory_bytes is prom-client's (VmRSS on Linux); the V8 heap is its
    // nodejs_heap_size_used_bytes.
    gauge('process_resident_memory_max_bytes', 'Peak resident set size since start.', () => process.resourceUsage().maxRSS * 1024);
    gauge('nodejs_array_buffers_bytes', 'Memory held by ArrayBuffers (tensors, request bodies).', () => process.memoryUsage().arrayBuffers);
  }

  /** Series of the generation routes (when the server has a language model). */
  addGeneration(scheduler) {
    const registers = [this.registry];
    this.generationRejections = new client.Counter({
      name: 'generate_rejected_total',
      help: 'Generation requests refused (overload: 503) or cut short (deadline, disconnect: the session keeps what was streamed).',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REJECT_REASONS) this.generationRejections.inc({ reason }, 0);
    this.generatedTokens = new client.Counter({ name: 'generate_tokens_total', help: 'Tokens streamed to clients.', registers });
    this.batchRows = new client.Histogram({
      name: 'generate_step_sessions',
      help: 'Sessions advanced per batched step.',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128],
      registers,
    });
    this.stepSeconds = new client.Histogram({ name: 'generate_step_duration_seconds', help: 'Time of one batched step.', buckets: LATENCY_BUCKETS, registers });
    new client.Gauge({
      name: 'generate_active_sessions',
      help: 'Sessions generating now.',
      registers,
      collect() {
        this.set(scheduler.active);
      },
    });
  }

  stop() {
    this.eventLoop.disable();
  }

  /** One finished request; `seconds` from its arrival to the end of the response. */
  observe(method, route, status, seconds) {
    this.requests.inc({ method, route, status });
    this.latency.observe({ route }, seconds);
  }

  /** One encode request not run; `reason` is one of REJECT_REASONS. */
  reject(reason) {
    this.rejections.inc({ reason });
  }

  /** The exposition text, in `this.contentType`. */
  render() {
    return this.registry.metrics();
  }
}

/** Reads one sample from Prometheus text: `value(text, 'name', {label: 'x'})`. */
function sample(text, name, wanted = {}) {
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const have = {};
    for (const [, k, v] of (match[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) have[k] = v;
    if (Object.entries(wanted).every(([k, v]) => have[k] === String(v))) return Number(match[3]);
  }
  return undefined;
}

module.exports = { Metrics, sample, LATENCY_BUCKETS };
