import type { PoolConfig } from "../config/schema.ts";
import { isCapacity } from "./pressure.ts";
import {
  compareIds,
  countedReplicas,
  formatPressure,
  formatSeconds,
  hasLasted,
  noChange,
  noteOnly,
  secondsSince,
  type RuleOutcome,
  type TickContext,
} from "./tick-context.ts";
import type { Direction, PlanAction, ReplicaObservation } from "./types.ts";

/**
 * Decides at most one ladder step for the pool.
 *
 * Down: pressure above `pressureHigh` for `stepDownAfterSeconds`, and no replica can be added in
 * time, because the pool is at `replicas.max` or a cold start takes longer than the time-to-first-token
 * SLO. Up: pressure below `pressureLow` for `stepUpAfterSeconds` with a replica below rung 0.
 *
 * Either way, one step waits for `minDwellSeconds` after the pool's previous step, and for every
 * replica to finish switching, so each step's effect on pressure is seen before the next.
 */
export function planStep(context: TickContext): RuleOutcome {
  const { autoscaling } = context.pool;
  const { highSeconds, lowSeconds } = context;
  if (hasLasted(highSeconds, autoscaling.stepDownAfterSeconds)) {
    const limit = whyNoReplicaInTime(context);
    if (limit === undefined) return noChange;
    return whenStepAllowed(context, () => stepDown(context, highSeconds, limit));
  }
  const steppedDown = context.observation.replicas.some((replica) => isCapacity(replica) && replica.rung > 0);
  if (hasLasted(lowSeconds, autoscaling.stepUpAfterSeconds) && steppedDown) {
    return whenStepAllowed(context, () => stepUp(context, lowSeconds));
  }
  return noChange;
}

/**
 * Returns the rung of the pool's highest quality floor: the smallest rung index that any request
 * class's floor names. Without floors it is the last rung, which puts no limit on steps.
 */
export function floorReserveRung(pool: PoolConfig): number {
  const rungs = Object.values(pool.qualityFloors)
    .map((quant) => pool.variants.findIndex((variant) => variant.quant === quant))
    .filter((rung) => rung >= 0);
  return rungs.length === 0 ? pool.variants.length - 1 : Math.min(...rungs);
}

/** Returns why an added replica would not serve in time, or undefined when one would. */
function whyNoReplicaInTime(context: TickContext): string | undefined {
  const { pool, observation } = context;
  if (countedReplicas(observation).length >= pool.replicas.max) return `at the maximum of ${pool.replicas.max} replicas`;
  const coldStart = observation.coldStartSeconds;
  const slo = pool.slo.timeToFirstTokenSeconds;
  if (coldStart !== undefined && coldStart > slo) {
    return `a new replica takes ${formatSeconds(coldStart)} to start, longer than the ${formatSeconds(slo)} time-to-first-token SLO`;
  }
  return undefined;
}

function whenStepAllowed(context: TickContext, step: () => RuleOutcome): RuleOutcome {
  const swapping = context.observation.replicas.find((replica) => replica.swapping);
  if (swapping !== undefined) return noteOnly(`the next ladder step waits until ${swapping.id} has switched variants`);

  const dwell = context.pool.autoscaling.minDwellSeconds;
  const elapsed = secondsSince(context.previous.lastStepAt, context.observation.at);
  if (elapsed < dwell) return noteOnly(`the next ladder step waits for the ${formatSeconds(dwell)} dwell (${formatSeconds(elapsed)} since the last step)`);
  return step();
}

/**
 * Steps one replica down: the one on the highest-quality rung, ties broken by id, so the pool moves
 * down together. A replica that cannot move (last rung, no faster rung below, floor reserve) passes
 * the turn to the next.
 */
function stepDown(context: TickContext, highSeconds: number, limit: string): RuleOutcome {
  const candidates = movableReplicas(context).sort((a, b) => a.rung - b.rung || compareIds(a, b));
  const notes: string[] = [];
  for (const replica of candidates) {
    const target = lowerRung(context, replica.rung, notes);
    if (target === undefined) continue;
    const reserveNote = checkFloorReserve(context, replica, target);
    if (reserveNote !== undefined) {
      addNote(notes, reserveNote);
      continue;
    }
    const { pressureHigh } = context.pool.autoscaling;
    const reason = `pressure ${formatPressure(context.pressure)} above ${pressureHigh} for ${formatSeconds(highSeconds)}, ${limit}`;
    return { action: stepAction(replica, target, "down", reason), notes };
  }
  if (candidates.length > 0) addNote(notes, "no ready replica can step further down");
  return { action: undefined, notes };
}

/** Steps one replica up: the one on the lowest-quality rung, ties broken by id. */
function stepUp(context: TickContext, lowSeconds: number): RuleOutcome {
  const candidates = movableReplicas(context)
    .filter((replica) => replica.rung > 0)
    .sort((a, b) => b.rung - a.rung || compareIds(a, b));
  const replica = candidates[0];
  if (replica === undefined) return noChange;

  const notes: string[] = [];
  const target = higherRung(context, replica.rung, notes);
  const reason = `pressure ${formatPressure(context.pressure)} below ${context.pool.autoscaling.pressureLow} for ${formatSeconds(lowSeconds)}`;
  return { action: stepAction(replica, target, "up", reason), notes };
}

/** Ready replicas that may switch variants: not already switching. */
function movableReplicas(context: TickContext): ReplicaObservation[] {
  return context.observation.replicas.filter((replica) => isCapacity(replica) && !replica.swapping);
}

/**
 * Returns the first rung below `from` that decodes faster than `from`, noting each rung skipped on
 * the way; undefined when there is none.
 */
function lowerRung(context: TickContext, from: number, notes: string[]): number | undefined {
  for (let rung = from + 1; rung < context.pool.variants.length; rung += 1) {
    const skip = checkSpeedup(context, rung, from);
    if (skip === undefined) return rung;
    addNote(notes, skip);
  }
  return undefined;
}

/**
 * Returns the rung above `from` to step up to: the next one, unless it decodes no faster than the rung
 * above it. Such a rung costs quality and buys no speed, so the step goes past it.
 */
function higherRung(context: TickContext, from: number, notes: string[]): number {
  let rung = from - 1;
  while (rung > 0) {
    const skip = checkSpeedup(context, rung, rung - 1);
    if (skip === undefined) break;
    addNote(notes, skip);
    rung -= 1;
  }
  return rung;
}

/**
 * Returns a note when `rung` decodes less than `autoscaling.minStepSpeedup` times as fast as `reference`, and
 * undefined when it is faster enough. A rung without a measured rate counts as faster: the step is
 * allowed so the rung gets measured.
 */
// NOTE: workers measure each variant's rate under whatever load it served, so a rung measured in the
// middle of a burst can look slower than one measured idle; the comparison is only as fair as that.
function checkSpeedup(context: TickContext, rung: number, reference: number): string | undefined {
  const minimumSpeedup = context.pool.autoscaling.minStepSpeedup;
  const rate = measuredRate(context, rung);
  const referenceRate = measuredRate(context, reference);
  if (rate === undefined || referenceRate === undefined || rate >= referenceRate * minimumSpeedup) return undefined;
  const percent = Math.round((minimumSpeedup - 1) * 100);
  const { pool } = context;
  return `skipped ${quantOf(pool, rung)}: it decodes ${formatRate(rate)}, less than ${percent}% faster than ${quantOf(pool, reference)} at ${formatRate(referenceRate)}`;
}

function measuredRate(context: TickContext, rung: number): number | undefined {
  const rate = context.observation.decodeRates[rung];
  return rate !== undefined && Number.isFinite(rate) && rate > 0 ? rate : undefined;
}

/**
 * Returns a note when moving `replica` to `target` would leave fewer than `keepAtOrAboveFloor` ready
 * replicas at or above the pool's highest quality floor, and undefined when the step is allowed. The
 * reserve keeps a local replica for requests with that floor.
 */
function checkFloorReserve(context: TickContext, replica: ReplicaObservation, target: number): string | undefined {
  const { pool } = context;
  const floor = floorReserveRung(pool);
  if (replica.rung > floor || target <= floor) return undefined;

  const keep = pool.autoscaling.keepAtOrAboveFloor;
  const atOrAboveFloor = movableReplicas(context).filter((candidate) => candidate.rung <= floor).length;
  if (atOrAboveFloor - 1 >= keep) return undefined;
  return `${replica.id} stays on ${quantOf(pool, replica.rung)}: the pool keeps ${keep} ready replicas at or above the ${quantOf(pool, floor)} quality floor`;
}

function stepAction(replica: ReplicaObservation, toRung: number, direction: Direction, reason: string): PlanAction {
  return { kind: "step", replicaId: replica.id, fromRung: replica.rung, toRung, direction, reason };
}

function quantOf(pool: PoolConfig, rung: number): string {
  return pool.variants[rung]?.quant ?? `rung ${rung}`;
}

function formatRate(tokensPerSecond: number): string {
  return `${Number(tokensPerSecond.toFixed(1))} tokens/s`;
}

function addNote(notes: string[], note: string): void {
  if (!notes.includes(note)) notes.push(note);
}
