import type { AutoscalingConfig } from "../config/schema.ts";
import type { PlannerState, PoolObservation, ReplicaObservation } from "./types.ts";

/**
 * Pressure of a pool with demand but no ready slot, as a multiple of `pressureHigh`: above the
 * threshold, so the pool counts as overloaded, and finite, so it can be logged and stored as JSON.
 */
const pressureWithoutCapacity = 2;

/** A pool's demand and pressure at one tick, with the timers that follow from them. */
export interface PressureReading {
  /** Smoothed demand, in slots. */
  demand: number;
  /** Smoothed pressure. */
  pressure: number;
  highSince: number | undefined;
  lowSince: number | undefined;
}

/**
 * Returns whether a replica's slots count as local capacity. A replica that switches variants stays
 * `ready` and keeps serving, so it counts. Starting, draining and failed replicas serve nothing.
 */
export function isCapacity(replica: ReplicaObservation): boolean {
  return replica.state === "ready";
}

export function readySlots(observation: PoolObservation): number {
  return observation.replicas.filter(isCapacity).reduce((sum, replica) => sum + replica.slots, 0);
}

/**
 * Measures demand in slots: requests holding a slot on a ready replica, plus requests waiting in the
 * pool's queue, plus the slots that requests overflowed as `saturated` would have held (their rate
 * times the mean service time, by Little's law). Requests still finishing on a draining replica are
 * left out, because the pool no longer counts that replica's slots as capacity.
 */
export function measureDemand(observation: PoolObservation): number {
  const busy = observation.replicas
    .filter(isCapacity)
    .reduce((sum, replica) => sum + Math.min(replica.outstanding, replica.slots), 0);
  return busy + observation.queueDepth + observation.saturatedOverflowRate * observation.serviceSeconds;
}

/**
 * Computes the pool's pressure: smoothed demand over ready slots. With no ready slot, pressure is
 * twice `pressureHigh` while there is demand at this tick and 0 otherwise.
 *
 * The moving average smooths demand, not the ratio, so a change of capacity shows in the pressure at
 * once: a replica that just became ready lowers it at that tick, instead of leaving an average that
 * still reads high and adds a replica too many. The average weighs the new demand by
 * 1 - exp(-elapsed / smoothingSeconds), with the time since the previous observation, so irregular
 * ticks weigh what they cover and a long gap (a restart) mostly replaces the average.
 */
export function readPressure(autoscaling: AutoscalingConfig, observation: PoolObservation, previous: PlannerState): PressureReading {
  const current = measureDemand(observation);
  const demand = smoothDemand(previous, current, observation.at, autoscaling.smoothingSeconds);
  const slots = readySlots(observation);
  let pressure = 0;
  if (slots > 0) pressure = demand / slots;
  else if (current > 0) pressure = pressureWithoutCapacity * autoscaling.pressureHigh;

  // Between the two thresholds both timers stop, so pressure must stay on one side of the band for
  // the whole delay before anything changes.
  const high = pressure > autoscaling.pressureHigh;
  // The low timer does not run while a replica starts: the pool has not yet seen its demand with that
  // replica serving, and idle time during a cold start would remove the replica as soon as it is ready.
  const starting = observation.replicas.some((replica) => replica.state === "starting");
  const low = pressure < autoscaling.pressureLow && !starting;
  return {
    demand,
    pressure,
    highSince: high ? (previous.highSince ?? observation.at) : undefined,
    lowSince: low ? (previous.lowSince ?? observation.at) : undefined,
  };
}

function smoothDemand(previous: PlannerState, demand: number, at: number, smoothingSeconds: number): number {
  if (previous.observedAt === undefined) return demand;
  const elapsedSeconds = Math.max(0, (at - previous.observedAt) / 1000);
  const weight = 1 - Math.exp(-elapsedSeconds / smoothingSeconds);
  return previous.demand + weight * (demand - previous.demand);
}
