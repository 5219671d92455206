import type { Logger } from "pino";

import type { PoolConfig, SpillwayConfig } from "../config/schema.ts";
import type { ServiceTimes } from "../gateway/context.ts";
import type { PoolQueues } from "../gateway/pool-queue.ts";
import type { ReplicaTable } from "../gateway/replicas.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { readReadiness } from "../runtime/variant-switch.ts";
import type { ScalingRuntime } from "../runtime/types.ts";
import { initialPlannerState, planPool } from "./planner.ts";
import { loadPlannerStates, savePlannerStates } from "./planner-state.ts";
import type { PlanAction, PlannerState, PoolObservation } from "./types.ts";

export interface ControlLoopOptions {
  config: SpillwayConfig;
  table: ReplicaTable;
  queues: PoolQueues;
  runtime: ScalingRuntime;
  metrics: GatewayMetrics;
  serviceTimes: ServiceTimes;
  logger: Logger;
  /** JSON file that keeps the planner's state across controller restarts; in memory only when unset. */
  statePath?: string;
  intervalSeconds?: number;
  now?: () => number;
}

/** A pool's control state for `spillway status`. */
export interface PoolControlStatus {
  pressure: number;
  lastStepAt: number | undefined;
  lastScaleAt: number | undefined;
}

/**
 * Observes each pool every few seconds, asks the pure planner what to change, and has the runtime carry
 * it out: replica counts at once, ladder steps in the background (a variant switch takes seconds), one
 * step per replica at a time.
 */
export class ControlLoop {
  readonly #options: ControlLoopOptions;
  readonly #states: Map<string, PlannerState>;
  readonly #saturatedTotals = new Map<string, number>();
  readonly #switching = new Set<string>();
  /** The notes of each pool's previous tick, so a note that repeats every tick is logged once. */
  readonly #lastNotes = new Map<string, string>();
  #lastTickAt: number | undefined;
  #timer: NodeJS.Timeout | undefined;
  #ticking = false;

  constructor(options: ControlLoopOptions) {
    this.#options = options;
    this.#states = options.statePath === undefined ? new Map<string, PlannerState>() : loadPlannerStates(options.statePath, options.logger);
  }

  start(): void {
    const interval = (this.#options.intervalSeconds ?? 2) * 1000;
    this.#timer = setInterval(() => {
      if (this.#ticking) return;
      this.#ticking = true;
      this.tick()
        .catch((error: unknown) => this.#options.logger.error({ err: error }, "control loop tick failed"))
        .finally(() => {
          this.#ticking = false;
        });
    }, interval);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
  }

  status(pool: string): PoolControlStatus {
    const state = this.#states.get(pool) ?? initialPlannerState();
    return { pressure: state.pressure, lastStepAt: state.lastStepAt, lastScaleAt: state.lastScaleAt };
  }

  /** Runs one observe-plan-act round over every pool. */
  async tick(): Promise<void> {
    const now = (this.#options.now ?? Date.now)();
    const elapsedSeconds = this.#lastTickAt === undefined ? 0 : (now - this.#lastTickAt) / 1000;
    this.#lastTickAt = now;
    const saturated = await this.#saturatedTotalsNow();
    for (const pool of this.#options.config.pools) {
      const observation = await this.#observe(pool, now, elapsedSeconds, saturated.get(pool.name) ?? 0);
      const previous = this.#states.get(pool.name) ?? initialPlannerState();
      const { plan, state } = planPool(pool, observation, previous);
      this.#states.set(pool.name, state);
      const notes = plan.notes.join("\n");
      if (notes !== (this.#lastNotes.get(pool.name) ?? "")) {
        for (const note of plan.notes) this.#options.logger.info({ pool: pool.name, pressure: plan.pressure, note }, "planner note");
        this.#lastNotes.set(pool.name, notes);
      }
      for (const action of plan.actions) this.#execute(pool, action, plan.pressure);
    }
    if (this.#options.statePath !== undefined) savePlannerStates(this.#options.statePath, this.#states, this.#options.logger);
  }

  async #observe(pool: PoolConfig, now: number, elapsedSeconds: number, saturatedTotal: number): Promise<PoolObservation> {
    const { table, queues, serviceTimes, runtime } = this.#options;
    const replicas = table.forPool(pool.name);
    const previousTotal = this.#saturatedTotals.get(pool.name) ?? saturatedTotal;
    this.#saturatedTotals.set(pool.name, saturatedTotal);
    return {
      at: now,
      replicas: replicas.map((replica) => ({
        id: replica.id,
        state: replica.state,
        rung: replica.rung,
        swapping: replica.swapping === true || this.#switching.has(replica.id),
        slots: replica.slots,
        outstanding: replica.outstanding,
      })),
      queueDepth: queues.length(pool.name),
      saturatedOverflowRate: elapsedSeconds > 0 ? (saturatedTotal - previousTotal) / elapsedSeconds : 0,
      serviceSeconds: serviceTimes.get(pool.name),
      decodeRates: await this.#decodeRates(pool),
      coldStartSeconds: runtime.coldStartSeconds(pool.name),
      demandWithoutReplica: replicas.length === 0 && queues.length(pool.name) > 0,
    };
  }

  /** Averages the decode rate each ready replica reports per variant, indexed by rung. */
  async #decodeRates(pool: PoolConfig): Promise<Array<number | undefined>> {
    const sums = pool.variants.map(() => ({ total: 0, count: 0 }));
    const ready = this.#options.table.forPool(pool.name).filter((replica) => replica.state === "ready");
    const readings = await Promise.all(ready.map((replica) => readReadiness(replica.url)));
    for (const reading of readings) {
      for (const [quant, rate] of Object.entries(reading?.decodeTokensPerSecond ?? {})) {
        const rung = pool.variants.findIndex((variant) => variant.quant === quant);
        const sum = sums[rung];
        if (sum === undefined || !Number.isFinite(rate) || rate <= 0) continue;
        sum.total += rate;
        sum.count += 1;
      }
    }
    return sums.map((sum) => (sum.count === 0 ? undefined : sum.total / sum.count));
  }

  async #saturatedTotalsNow(): Promise<Map<string, number>> {
    const totals = new Map<string, number>();
    const metric = await this.#options.metrics.overflow.get();
    for (const value of metric.values) {
      if (value.labels.reason === "saturated" && typeof value.labels.pool === "string") totals.set(value.labels.pool, value.value);
    }
    return totals;
  }

  #execute(pool: PoolConfig, action: PlanAction, pressure: number): void {
    const { runtime, metrics, logger } = this.#options;
    if (action.kind === "scale") {
      logger.info({ pool: pool.name, replicas: action.replicas, pressure, reason: action.reason }, "scaling pool");
      runtime.setReplicaCount(pool.name, action.replicas);
      return;
    }
    if (this.#switching.has(action.replicaId)) return;
    const from = pool.variants[action.fromRung]?.quant;
    const to = pool.variants[action.toRung]?.quant;
    logger.info({ pool: pool.name, replica: action.replicaId, from, to, direction: action.direction, pressure, reason: action.reason }, "ladder step");
    this.#switching.add(action.replicaId);
    runtime
      .setVariant(action.replicaId, action.toRung)
      .then(() => metrics.ladderSteps.inc({ pool: pool.name, direction: action.direction }))
      .catch((error: unknown) => logger.error({ err: error, pool: pool.name, replica: action.replicaId, from, to }, "ladder step failed"))
      .finally(() => this.#switching.delete(action.replicaId));
  }
}
