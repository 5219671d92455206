import type { BackendName } from "./backends/types.ts";
import type { Telemetry } from "./gateway/context.ts";
import type { OverflowReason } from "./gateway/admission.ts";
import type { GatewayMetrics } from "./metrics.ts";

/** Records the request path's measurements into the gateway's Prometheus metrics. */
export function metricsTelemetry(metrics: GatewayMetrics): Telemetry {
  return {
    overflow(pool: string, reason: OverflowReason) {
      metrics.overflow.inc({ pool, reason });
    },
    queueWait(pool: string, seconds: number) {
      metrics.queueWait.observe({ pool }, seconds);
    },
    firstToken(pool: string, backend: BackendName, seconds: number) {
      metrics.timeToFirstToken.observe({ pool, backend }, seconds);
    },
    finished(pool: string, backend: BackendName | "gateway", status: number, seconds: number) {
      metrics.requests.inc({ pool, backend, code: String(status) });
      metrics.requestDuration.observe({ pool, backend }, seconds);
    },
    upstreamError(backend: BackendName, status: number) {
      metrics.upstreamErrors.inc({ backend, code: String(status) });
    },
  };
}
