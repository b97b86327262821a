// Loaded with `node --require ./otel.js mes.js`: the Node.js auto-instrumentation
// (@opentelemetry/auto-instrumentations-node, default set) exporting OTLP/HTTP to the gateway
// (OTEL_EXPORTER_OTLP_ENDPOINT) and, as the test's ground truth, every span as one JSON line
// to SPAN_LOG.
'use strict';
const fs = require('node:fs');
const { NodeSDK } = require('@opentelemetry/sdk-node');
const { getNodeAutoInstrumentations } = require('@opentelemetry/auto-instrumentations-node');
const { OTLPTraceExporter } = require('@opentelemetry/exporter-trace-otlp-proto');
const { BatchSpanProcessor, SimpleSpanProcessor } = require('@opentelemetry/sdk-trace');

const KINDS = ['INTERNAL', 'SERVER', 'CLIENT', 'PRODUCER', 'CONSUMER'];

/** Appends each finished span to a file, one JSON object a line. */
class JsonLinesExporter {
  constructor(path) {
    this.path = path;
  }
  export(spans, done) {
    const lines = spans.map((span) => JSON.stringify({
      service: span.resource.attributes['service.name'],
      scope: span.instrumentationScope.name,
      name: span.name,
      kind: KINDS[span.kind],
      trace_id: span.spanContext().traceId,
      span_id: span.spanContext().spanId,
      parent_span_id: span.parentSpanContext ? span.parentSpanContext.spanId : '',
      start_time_unix_nano: String(BigInt(span.startTime[0]) * 1000000000n + BigInt(span.startTime[1])),
      attributes: span.attributes,
      links: span.links.map((l) => ({ trace_id: l.context.traceId, span_id: l.context.spanId })),
      status: span.status.code === 2 ? 'ERROR' : span.status.code === 1 ? 'OK' : 'UNSET',
    }) + '\n');
    fs.appendFileSync(this.path, lines.join(''));
    done({ code: 0 });
  }
  shutdown() {
    return Promise.resolve();
  }
}

const sdk = new NodeSDK({
  spanProcessors: [
    new BatchSpanProcessor({
      exporter: new OTLPTraceExporter(),
      scheduledDelayMillis: Number(process.env.OTEL_BSP_SCHEDULE_DELAY || 5000),
    }),
    new SimpleSpanProcessor({ exporter: new JsonLinesExporter(process.env.SPAN_LOG) }),
  ],
  instrumentations: [getNodeAutoInstrumentations()],
});
sdk.start();

// SIGTERM: flush the batch to the gateway, then exit.
process.on('SIGTERM', () => {
  sdk.shutdown().finally(() => process.exit(0));
});
