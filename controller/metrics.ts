import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics, type Metric } from "prom-client";

import type { BackendName } from "./backends/types.ts";
import type { ReplicaState } from "./gateway/replicas.ts";

export const overflowReasons = ["saturated", "cold_start", "quality_floor", "context_length", "local_error"] as const;
export type OverflowReason = (typeof overflowReasons)[number];

export const replicaStates = ["starting", "ready", "draining", "failed"] as const satisfies readonly ReplicaState[];
export const ladderDirections = ["down", "up"] as const;

/** The `quant` label of Gemini tokens, which have no quantization. */
export const noQuantLabel = "none";

/** Remaining budget in USD of each tenant that has one, read at every scrape. */
export type BudgetSource = () => Iterable<{ tenant: string; remainingUsd: number }>;

/**
 * The gateway's Prometheus metrics, on a registry of their own. Labels take only configured or
 * enumerated values (pools, backends, quants, tenants, states, status codes), never request ids,
 * prompts or user strings, so the number of series stays bounded.
 */
export class GatewayMetrics {
  readonly registry = new Registry();
  readonly #registers = [this.registry];
  readonly requests: Counter<"pool" | "backend" | "code"> = new Counter({
    name: "spillway_requests_total",
    help: "Chat completion responses, by pool, backend (local, gemini, or gateway for replies the gateway gave itself) and HTTP status code.",
    labelNames: ["pool", "backend", "code"],
    registers: this.#registers,
  });
  readonly tokens: Counter<"pool" | "backend" | "quant" | "kind"> = new Counter({
    name: "spillway_tokens_total",
    help: "Tokens metered, by kind (prompt or completion); quant is none for Gemini.",
    labelNames: ["pool", "backend", "quant", "kind"],
    registers: this.#registers,
  });
  readonly spend: Counter<"pool" | "backend" | "tenant"> = new Counter({
    name: "spillway_spend_usd_total",
    help: "Spend in USD: Gemini charges, and replica time attributed to tenants by their local tokens (tenant idle when none).",
    labelNames: ["pool", "backend", "tenant"],
    registers: this.#registers,
  });
  readonly geminiEquivalent: Counter<"pool"> = new Counter({
    name: "spillway_gemini_equivalent_usd_total",
    help: "What the pool's metered tokens, local and Gemini, would have cost on Gemini, in USD.",
    labelNames: ["pool"],
    registers: this.#registers,
  });
  readonly overflow: Counter<"pool" | "reason"> = new Counter({
    name: "spillway_overflow_total",
    help: `Requests sent to Gemini instead of a local replica, by reason (${overflowReasons.join(", ")}).`,
    labelNames: ["pool", "reason"],
    registers: this.#registers,
  });
  readonly timeToFirstToken: Histogram<"pool" | "backend"> = new Histogram({
    name: "spillway_time_to_first_token_seconds",
    help: "Time from receiving a request to its first content byte, queue wait included.",
    labelNames: ["pool", "backend"],
    buckets: [0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30],
    registers: this.#registers,
  });
  readonly requestDuration: Histogram<"pool" | "backend"> = new Histogram({
    name: "spillway_request_duration_seconds",
    help: "Time from receiving a request to its last byte.",
    labelNames: ["pool", "backend"],
    buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300],
    registers: this.#registers,
  });
  readonly queueWait: Histogram<"pool"> = new Histogram({
    name: "spillway_queue_wait_seconds",
    help: "Time a request waited for a local slot before it was sent to a replica or overflowed.",
    labelNames: ["pool"],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: this.#registers,
  });
  readonly queueDepth: Gauge<"pool"> = new Gauge({
    name: "spillway_queue_depth",
    help: "Requests waiting for a local slot.",
    labelNames: ["pool"],
    registers: this.#registers,
  });
  readonly poolReplicas: Gauge<"pool" | "state"> = new Gauge({
    name: "spillway_pool_replicas",
    help: `Replicas by state (${replicaStates.join(", ")}).`,
    labelNames: ["pool", "state"],
    registers: this.#registers,
  });
  readonly replicaQuantBits: Gauge<"pool" | "replica"> = new Gauge({
    name: "spillway_replica_quant_bits",
    help: "Bits per weight of the quantization a replica serves (Q4_K_M is 4); 0 when unknown.",
    labelNames: ["pool", "replica"],
    registers: this.#registers,
  });
  readonly ladderSteps: Counter<"pool" | "direction"> = new Counter({
    name: "spillway_ladder_steps_total",
    help: "Replica moves along the pool's quantization ladder, by direction (down or up).",
    labelNames: ["pool", "direction"],
    registers: this.#registers,
  });
  readonly budgetRemaining: Gauge<"tenant"> = new Gauge({
    name: "spillway_budget_remaining_usd",
    help: "USD a tenant may still spend in its tightest budget period (day or month); negative once overspent.",
    labelNames: ["tenant"],
    registers: this.#registers,
    collect: () => this.#collectBudgets(),
  });
  readonly upstreamErrors: Counter<"backend" | "code"> = new Counter({
    name: "spillway_upstream_errors_total",
    help: "Failed calls to a backend, by backend and HTTP status code (0 for connection errors).",
    labelNames: ["backend", "code"],
    registers: this.#registers,
  });
  readonly circuitOpen: Gauge<"backend"> = new Gauge({
    name: "spillway_circuit_open",
    help: "1 while the backend's circuit breaker is open and calls to it are skipped, else 0.",
    labelNames: ["backend"],
    registers: this.#registers,
  });
  #budgetSource: BudgetSource | undefined;

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Starts a pool's enumerated series at zero, so dashboards have a series before the first event. */
  addPool(pool: string): void {
    for (const state of replicaStates) this.poolReplicas.set({ pool, state }, 0);
    for (const reason of overflowReasons) this.overflow.inc({ pool, reason }, 0);
    for (const direction of ladderDirections) this.ladderSteps.inc({ pool, direction }, 0);
    this.queueDepth.set({ pool }, 0);
  }

  /** Deletes every series with the pool's label, for a pool removed from the config. */
  async removePool(pool: string): Promise<void> {
    const metrics: Metric<string>[] = [
      this.requests,
      this.tokens,
      this.spend,
      this.geminiEquivalent,
      this.overflow,
      this.timeToFirstToken,
      this.requestDuration,
      this.queueWait,
      this.queueDepth,
      this.poolReplicas,
      this.replicaQuantBits,
      this.ladderSteps,
    ];
    await Promise.all(metrics.map((metric) => removeSeriesWith(metric, "pool", pool)));
  }

  /** Sets the function that the budget gauge reads at every scrape. The ledger registers itself here. */
  setBudgetSource(source: BudgetSource): void {
    this.#budgetSource = source;
  }

  /** Records the quant a replica serves, as bits per weight. */
  setReplicaQuant(pool: string, replica: string, quant: string): void {
    this.replicaQuantBits.set({ pool, replica }, quantBits(quant));
  }

  /** Counts a request's metered tokens. */
  countTokens(pool: string, backend: BackendName, quant: string | null, promptTokens: number, completionTokens: number): void {
    const quantLabel = quant ?? noQuantLabel;
    this.tokens.inc({ pool, backend, quant: quantLabel, kind: "prompt" }, promptTokens);
    this.tokens.inc({ pool, backend, quant: quantLabel, kind: "completion" }, completionTokens);
  }

  #collectBudgets(): void {
    if (this.#budgetSource === undefined) return;
    this.budgetRemaining.reset();
    for (const { tenant, remainingUsd } of this.#budgetSource()) this.budgetRemaining.set({ tenant }, remainingUsd);
  }
}

/**
 * Returns the bits per weight of a GGUF quantization name (Q4_K_M is 4, IQ3_XXS is 3, BF16 is 16),
 * or 0 for a name it does not know.
 */
export function quantBits(quant: string): number {
  const name = quant.toUpperCase();
  if (name === "F32") return 32;
  if (name === "F16" || name === "BF16") return 16;
  const match = /^(I?)Q(\d)_/.exec(name);
  if (match === null) return 0;
  const bits = Number(match[2]);
  const known = match[1] === "I" ? [1, 2, 3, 4] : [2, 3, 4, 5, 6, 8];
  return known.includes(bits) ? bits : 0;
}

/** Removes the metric's series whose `label` equals `value`, because prom-client removes series only by their full label set. */
async function removeSeriesWith(metric: Metric<string>, label: string, value: string): Promise<void> {
  const { values } = await metric.get();
  const removed = new Set<string>();
  for (const { labels } of values) {
    if (labels[label] !== value) continue;
    // Histogram values carry a per-bucket `le` label that is not part of the series' label set.
    const { le: _bucket, ...seriesLabels } = labels;
    const key = JSON.stringify(seriesLabels);
    if (removed.has(key)) continue;
    removed.add(key);
    metric.remove(seriesLabels as Record<string, string>);
  }
}
