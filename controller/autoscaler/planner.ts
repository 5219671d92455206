import type { PoolConfig } from "../config/schema.ts";
import { planStep } from "./ladder.ts";
import { readPressure } from "./pressure.ts";
import { planScale } from "./scaling.ts";
import type { TickContext } from "./tick-context.ts";
import type { PlanAction, PlannerState, PoolObservation, PoolPlan } from "./types.ts";

export function initialPlannerState(): PlannerState {
  return {
    pressure: 0,
    demand: 0,
    highSince: undefined,
    lowSince: undefined,
    lastStepAt: undefined,
    lastScaleAt: undefined,
    observedAt: undefined,
  };
}

/**
 * Plans one control tick of a pool: at most one change of the replica count (`planScale`) and at most
 * one ladder step (`planStep`), from the observation and the state of the previous tick. A pure
 * function: time comes from `observation.at`, and the same inputs always give the same plan.
 *
 * Under high pressure both rules may act at one tick, when a replica is added but starts too slowly to
 * help in time. Under low pressure they cannot, because the count shrinks only once every replica is
 * back on rung 0.
 */
export function planPool(pool: PoolConfig, observation: PoolObservation, state: PlannerState): { plan: PoolPlan; state: PlannerState } {
  const at = observation.at;
  const reading = readPressure(pool.autoscaling, observation, state);
  const context: TickContext = {
    pool,
    observation,
    previous: state,
    pressure: reading.pressure,
    highSeconds: reading.highSince === undefined ? undefined : (at - reading.highSince) / 1000,
    lowSeconds: reading.lowSince === undefined ? undefined : (at - reading.lowSince) / 1000,
  };

  const scale = planScale(context);
  const step = planStep(context);
  const actions = [scale.action, step.action].filter((action): action is PlanAction => action !== undefined);
  const next: PlannerState = {
    pressure: reading.pressure,
    demand: reading.demand,
    highSince: reading.highSince,
    lowSince: reading.lowSince,
    lastStepAt: step.action === undefined ? state.lastStepAt : at,
    lastScaleAt: scale.action === undefined ? state.lastScaleAt : at,
    observedAt: at,
  };
  return { plan: { actions, pressure: reading.pressure, notes: [...scale.notes, ...step.notes] }, state: next };
}
