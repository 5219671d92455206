import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

import type { DecodeRates } from "./decode-rates.ts";

/** The worker's Prometheus metrics. Names and labels follow the metric table in docs/api.md. */
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
  // A gauge without labels reads 0 until it is first set.
  readonly swapInProgress = new Gauge({
    name: "spillway_worker_swap_in_progress",
    help: "1 while the worker switches the variant it serves, otherwise 0.",
    registers: [this.registry],
  });
  readonly variantSwaps = new Counter({
    name: "spillway_worker_variant_swaps_total",
    help: "Completed variant swaps, by the quantization served before and after.",
    labelNames: ["from", "to"] as const,
    registers: [this.registry],
  });
  readonly decodeTokensPerSecond = new Gauge({
    name: "spillway_worker_decode_tokens_per_second",
    help: "Recent decode speed of one request after its first token, a moving average per quantization.",
    labelNames: ["quant"] as const,
    registers: [this.registry],
  });

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

  /** Names the variant now serving; the series of the one before it is removed. */
  showVariant(model: string, quant: string, loadSeconds: number): void {
    this.modelInfo.reset();
    this.modelInfo.set({ model, quant }, 1);
    this.modelLoadSeconds.set(loadSeconds);
  }
}

/** Slot state the metrics read at scrape time. */
export interface SlotGauges {
  busySlots: number;
  freeSlots: number;
  queueDepth: number;
  kvCacheUsageRatio: number;
}

/** Refreshes the gauges that describe current state; call it before each scrape. */
export function observeWorker(metrics: WorkerMetrics, slots: SlotGauges, decodeRates: DecodeRates): void {
  metrics.slots.set({ state: "busy" }, slots.busySlots);
  metrics.slots.set({ state: "free" }, slots.freeSlots);
  metrics.queueDepth.set(slots.queueDepth);
  metrics.kvCacheUsage.set(slots.kvCacheUsageRatio);
  for (const [quant, rate] of Object.entries(decodeRates.snapshot())) metrics.decodeTokensPerSecond.set({ quant }, rate);
}
