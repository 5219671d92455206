import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/** The worker's Prometheus metrics. Names and labels follow the project's metric contract in docs/metrics.md. */
export class WorkerMetrics {
  readonly registry = new Registry();
  readonly slots: Gauge<"state">;
  readonly queueDepth: Gauge;
  readonly tokens: Counter<"kind">;
  readonly requests: Counter<"code">;
  readonly timePerOutputToken: Histogram;
  readonly timeToFirstToken: Histogram;
  readonly kvCacheUsage: Gauge;
  readonly modelInfo: Gauge<"model" | "quant">;
  readonly modelLoadSeconds: Gauge;

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    this.slots = new Gauge({ name: "spillway_worker_slots", help: "Slots by state (busy or free).", labelNames: ["state"], registers });
    this.queueDepth = new Gauge({ name: "spillway_worker_queue_depth", help: "Requests waiting for a free slot.", registers });
    this.tokens = new Counter({
      name: "spillway_worker_tokens_total",
      help: "Tokens processed, by kind (prompt or completion).",
      labelNames: ["kind"],
      registers,
    });
    this.requests = new Counter({
      name: "spillway_worker_requests_total",
      help: "Chat completion responses, by HTTP status code.",
      labelNames: ["code"],
      registers,
    });
    this.timePerOutputToken = new Histogram({
      name: "spillway_worker_time_per_output_token_seconds",
      help: "Mean decode time per output token after the first, per request.",
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64],
      registers,
    });
    this.timeToFirstToken = new Histogram({
      name: "spillway_worker_time_to_first_token_seconds",
      help: "Time from receiving a request to its first decoded output, queue wait included.",
      buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.kvCacheUsage = new Gauge({
      name: "spillway_worker_kv_cache_usage_ratio",
      help: "Fraction of the context's KV cache cells that hold tokens.",
      registers,
    });
    this.modelInfo = new Gauge({
      name: "spillway_worker_model_info",
      help: "The loaded model and its quantization; the value is always 1.",
      labelNames: ["model", "quant"],
      registers,
    });
    this.modelLoadSeconds = new Gauge({
      name: "spillway_worker_model_load_seconds",
      help: "Seconds the last model load took, from resolving the file to a ready context.",
      registers,
    });
    // Known label values start at zero, so rates and dashboards have a series before the first request.
    for (const kind of ["prompt", "completion"]) this.tokens.inc({ kind }, 0);
    for (const state of ["busy", "free"]) this.slots.set({ state }, 0);
  }
}

/** Engine state the metrics read at scrape time. */
export interface EngineGauges {
  slots: number;
  busySlots: number;
  queueDepth: number;
  kvCacheUsageRatio: number;
}

/** Refreshes the gauges that describe current engine state; call it before each scrape. */
export function observeEngine(metrics: WorkerMetrics, engine: EngineGauges): void {
  metrics.slots.set({ state: "busy" }, engine.busySlots);
  metrics.slots.set({ state: "free" }, engine.slots - engine.busySlots);
  metrics.queueDepth.set(engine.queueDepth);
  metrics.kvCacheUsage.set(engine.kvCacheUsageRatio);
}
