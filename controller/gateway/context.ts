import type { Logger } from "pino";

import type { Backend, BackendName } from "../backends/types.ts";
import type { WorkerBackend } from "../backends/worker.ts";
import type { SpillwayConfig } from "../config/schema.ts";
import type { RecordedSpend, UsageRecord } from "../metering/types.ts";
import type { Runtime } from "../runtime/types.ts";
import type { BudgetStatus, OverflowReason } from "./admission.ts";
import type { PoolQueues } from "./pool-queue.ts";
import type { ReplicaTable } from "./replicas.ts";

/** The overflow backend, with whether it can take requests now (its circuit is not open). */
export interface OverflowBackend extends Backend {
  available(): boolean;
}

/** Spend bookkeeping as the gateway uses it; recording also counts the tokens in the metrics. */
export interface Metering {
  record(usage: UsageRecord): RecordedSpend;
  budgetStatus(tenant: string): BudgetStatus;
}

/** The gateway's measurements, kept separate so the request path does not know metric names. */
export interface Telemetry {
  overflow(pool: string, reason: OverflowReason): void;
  queueWait(pool: string, seconds: number): void;
  firstToken(pool: string, backend: BackendName, seconds: number): void;
  /** Counts a reply. Backend `gateway` marks a reply the gateway sent without reaching a backend. */
  finished(pool: string, backend: BackendName | "gateway", status: number, seconds: number): void;
  upstreamError(backend: BackendName, status: number): void;
}

/** Exponentially weighted mean of how long a local request holds its slot, per pool. */
export class ServiceTimes {
  readonly #seconds = new Map<string, number>();
  readonly #initialSeconds: number;

  constructor(initialSeconds = 1) {
    this.#initialSeconds = initialSeconds;
  }

  get(pool: string): number {
    return this.#seconds.get(pool) ?? this.#initialSeconds;
  }

  observe(pool: string, seconds: number): void {
    this.#seconds.set(pool, 0.8 * this.get(pool) + 0.2 * seconds);
  }
}

/** Everything the request path needs, wired once by `spillway up`. */
export interface GatewayContext {
  config: SpillwayConfig;
  table: ReplicaTable;
  queues: PoolQueues;
  worker: WorkerBackend;
  gemini: OverflowBackend | undefined;
  runtime: Runtime | undefined;
  metering: Metering;
  telemetry: Telemetry;
  serviceTimes: ServiceTimes;
  logger: Logger;
}
