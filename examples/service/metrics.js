// Prometheus text exposition (format 0.0.4) of what an operator of this service needs:
// requests by route and status, latency histograms, event-loop delay, the native
// library's queue, the server's own queue, memory.
'use strict';
const { monitorEventLoopDelay } = require('node:perf_hooks');

// The monitor samples every RESOLUTION_MS and records each whole interval: an idle loop
// reads ~10 ms. The delay exposed is what exceeds the interval.
const RESOLUTION_MS = 10;
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const label = (value) => String(value).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
const labels = (pairs) => `{${Object.entries(pairs).map(([k, v]) => `${k}="${label(v)}"`).join(',')}}`;

class Metrics {
  /**
   * @param {{ pendingCalls: () => number, limiter: { active: number, waiting: unknown[] } }} sources
   */
  constructor(sources) {
    this.sources = sources;
    this.requests = new Map(); // "method route status" -> { labels, count }
    this.latency = new Map(); // route -> { buckets: number[], sum, count }
    this.counters = { overload: 0, deadline: 0, disconnect: 0 };
    this.eventLoop = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.eventLoop.enable();
  }

  stop() {
    this.eventLoop.disable();
  }

  /** One finished request; `seconds` from its arrival to the end of the response. */
  observe(method, route, status, seconds) {
    const key = `${method} ${route} ${status}`;
    const entry = this.requests.get(key) || { labels: { method, route, status }, count: 0 };
    entry.count++;
    this.requests.set(key, entry);
    let histogram = this.latency.get(route);
    if (!histogram) {
      histogram = { buckets: new Array(LATENCY_BUCKETS.length).fill(0), sum: 0, count: 0 };
      this.latency.set(route, histogram);
    }
    LATENCY_BUCKETS.forEach((le, i) => {
      if (seconds <= le) histogram.buckets[i]++;
    });
    histogram.sum += seconds;
    histogram.count++;
  }

  render() {
    const lines = [];
    const metric = (name, type, help) => lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);

    metric('http_requests_total', 'counter', 'Requests answered, by method, route and status code.');
    for (const { labels: l, count } of this.requests.values()) lines.push(`http_requests_total${labels(l)} ${count}`);

    metric('http_request_duration_seconds', 'histogram', 'Time from arrival to the end of the response, by route.');
    for (const [route, h] of this.latency) {
      LATENCY_BUCKETS.forEach((le, i) => lines.push(`http_request_duration_seconds_bucket${labels({ route, le })} ${h.buckets[i]}`));
      lines.push(`http_request_duration_seconds_bucket${labels({ route, le: '+Inf' })} ${h.count}`);
      lines.push(`http_request_duration_seconds_sum${labels({ route })} ${h.sum}`);
      lines.push(`http_request_duration_seconds_count${labels({ route })} ${h.count}`);
    }

    metric('encode_rejected_total', 'counter', 'Encode requests not run: overload (503, queue full), deadline (504), disconnect (client gone; work cancelled).');
    for (const [reason, count] of Object.entries(this.counters)) lines.push(`encode_rejected_total${labels({ reason })} ${count}`);

    const { limiter } = this.sources;
    metric('encode_active_requests', 'gauge', 'Encode requests holding an inference slot.');
    lines.push(`encode_active_requests ${limiter.active}`);
    metric('encode_queued_requests', 'gauge', 'Encode requests waiting for an inference slot.');
    lines.push(`encode_queued_requests ${limiter.waiting.length}`);

    metric('performer_native_pending_calls', 'gauge', 'Async calls queued or running in the native thread pool, not yet settled.');
    lines.push(`performer_native_pending_calls ${this.sources.pendingCalls()}`);

    const h = this.eventLoop;
    const beyond = (ns) => Math.max(0, ns / 1e9 - RESOLUTION_MS / 1000);
    metric('nodejs_eventloop_delay_seconds', 'summary', `Event-loop delay since start: how late a timer sampled every ${RESOLUTION_MS} ms fires (perf_hooks.monitorEventLoopDelay).`);
    for (const q of [0.5, 0.9, 0.99]) lines.push(`nodejs_eventloop_delay_seconds${labels({ quantile: q })} ${h.count ? beyond(h.percentile(q * 100)) : 0}`);
    lines.push(`nodejs_eventloop_delay_seconds_sum ${h.count ? beyond(h.mean) * h.count : 0}`);
    lines.push(`nodejs_eventloop_delay_seconds_count ${h.count}`);
    metric('nodejs_eventloop_delay_max_seconds', 'gauge', 'Largest event-loop delay since start.');
    lines.push(`nodejs_eventloop_delay_max_seconds ${h.count ? beyond(h.max) : 0}`);

    const memory = process.memoryUsage();
    metric('process_resident_memory_bytes', 'gauge', 'Resident set size.');
    lines.push(`process_resident_memory_bytes ${memory.rss}`);
    metric('process_resident_memory_max_bytes', 'gauge', 'Peak resident set size since start.');
    lines.push(`process_resident_memory_max_bytes ${process.resourceUsage().maxRSS * 1024}`);
    metric('nodejs_heap_used_bytes', 'gauge', 'V8 heap in use.');
    lines.push(`nodejs_heap_used_bytes ${memory.heapUsed}`);
    metric('nodejs_array_buffers_bytes', 'gauge', 'Memory held by ArrayBuffers (tensors, request bodies).');
    lines.push(`nodejs_array_buffers_bytes ${memory.arrayBuffers}`);
    return lines.join('\n') + '\n';
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
