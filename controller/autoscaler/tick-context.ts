import type { PoolConfig } from "../config/schema.ts";
import type { PlanAction, PlannerState, PoolObservation, ReplicaObservation } from "./types.ts";

/** Everything a planning rule reads at one tick. */
export interface TickContext {
  pool: PoolConfig;
  observation: PoolObservation;
  /** State left by the previous tick. */
  previous: PlannerState;
  /** Smoothed pressure of this tick. */
  pressure: number;
  /** Seconds the pressure has stayed above `pressureHigh`; undefined while it is not above. */
  highSeconds: number | undefined;
  /** Seconds the pressure has stayed below `pressureLow`; undefined while it is not below. */
  lowSeconds: number | undefined;
}

/** Decision of one rule: at most one action, and notes on what it considered and did not do. */
export interface RuleOutcome {
  action: PlanAction | undefined;
  notes: string[];
}

export const noChange: RuleOutcome = { action: undefined, notes: [] };

export function noteOnly(note: string): RuleOutcome {
  return { action: undefined, notes: [note] };
}

/** Seconds from `since` to `at` (both in milliseconds); infinite when `since` is undefined, so a wait that never started counts as over. */
export function secondsSince(since: number | undefined, at: number): number {
  if (since === undefined) return Number.POSITIVE_INFINITY;
  return (at - since) / 1000;
}

/** Returns whether a timer that started `seconds` ago (undefined: not running) has reached `limit` seconds. */
export function hasLasted(seconds: number | undefined, limit: number): seconds is number {
  return seconds !== undefined && seconds >= limit;
}

/**
 * Replicas that count toward the pool's size, as the runtime counts them: all but draining ones. A
 * failed replica counts, because the runtime restarts it.
 */
export function countedReplicas(observation: PoolObservation): ReplicaObservation[] {
  return observation.replicas.filter((replica) => replica.state !== "draining");
}

export function formatPressure(pressure: number): string {
  return pressure.toFixed(2);
}

export function formatSeconds(seconds: number): string {
  return `${Number(seconds.toFixed(1))} s`;
}

export function compareIds(a: { id: string }, b: { id: string }): number {
  if (a.id === b.id) return 0;
  return a.id < b.id ? -1 : 1;
}
