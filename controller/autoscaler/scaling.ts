import {
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

/**
 * Decides the pool's replica count, one replica at a time. In order:
 *
 * - below `replicas.min`: scale to the minimum at once;
 * - no replica and a request waiting for one (`demandWithoutReplica`): scale to 1 at once;
 * - pressure above `pressureHigh` for `scaleUpAfterSeconds`, below `replicas.max`: add one;
 * - pressure below `pressureLow` for `scaleDownAfterSeconds`, above `replicas.min`: remove one.
 *
 * Adding and removing wait for a cool-down after the last change of the count in either direction:
 * `scaleUpAfterSeconds` before an addition, `scaleDownAfterSeconds` before a removal. So a pool that
 * just grew keeps its new replica for at least a scale-down delay, and alternating load cannot make
 * it grow and shrink in turn.
 */
export function planScale(context: TickContext): RuleOutcome {
  const { pool, observation } = context;
  const count = countedReplicas(observation).length;
  if (count < pool.replicas.min) {
    return scaleTo(pool.replicas.min, `${count} replicas, below the minimum of ${pool.replicas.min}`);
  }
  if (count === 0 && observation.demandWithoutReplica && pool.replicas.max >= 1) {
    return scaleTo(1, "a request is waiting for a pool with no replica");
  }
  if (hasLasted(context.highSeconds, pool.autoscaling.scaleUpAfterSeconds) && count < pool.replicas.max) {
    return scaleUp(context, count, context.highSeconds);
  }
  if (hasLasted(context.lowSeconds, pool.autoscaling.scaleDownAfterSeconds) && count > pool.replicas.min) {
    return scaleDown(context, count, context.lowSeconds);
  }
  return noChange;
}

/**
 * Adds one replica, unless one is still starting. A starting replica is capacity on its way, so adding
 * another before it serves would add capacity twice for the same demand.
 */
function scaleUp(context: TickContext, count: number, highSeconds: number): RuleOutcome {
  const { scaleUpAfterSeconds, pressureHigh } = context.pool.autoscaling;
  const starting = context.observation.replicas.find((replica) => replica.state === "starting");
  if (starting !== undefined) return noteOnly(`adding a replica waits until ${starting.id} has started`);

  const coolDown = waitForCoolDown(context, scaleUpAfterSeconds, "adding");
  if (coolDown !== undefined) return coolDown;

  const reason = `pressure ${formatPressure(context.pressure)} above ${pressureHigh} for ${formatSeconds(highSeconds)}, ${count} of at most ${context.pool.replicas.max} replicas`;
  return scaleTo(count + 1, reason);
}

/**
 * Removes one replica, but not while any replica serves below rung 0. Quality comes back before
 * capacity goes, because removing a replica would raise the pressure on the others and keep the
 * stepped-down one on its lower-quality rung.
 */
function scaleDown(context: TickContext, count: number, lowSeconds: number): RuleOutcome {
  const { pool, observation } = context;
  const steppedDown = countedReplicas(observation).find((replica) => replica.rung > 0);
  if (steppedDown !== undefined) {
    return noteOnly(`removing a replica waits until every replica is back on ${pool.variants[0]?.quant}; ${steppedDown.id} is on ${pool.variants[steppedDown.rung]?.quant}`);
  }

  const coolDown = waitForCoolDown(context, pool.autoscaling.scaleDownAfterSeconds, "removing");
  if (coolDown !== undefined) return coolDown;

  const reason = `pressure ${formatPressure(context.pressure)} below ${pool.autoscaling.pressureLow} for ${formatSeconds(lowSeconds)}, ${count} of at least ${pool.replicas.min} replicas`;
  return scaleTo(count - 1, reason);
}

function waitForCoolDown(context: TickContext, coolDownSeconds: number, change: "adding" | "removing"): RuleOutcome | undefined {
  const elapsed = secondsSince(context.previous.lastScaleAt, context.observation.at);
  if (elapsed >= coolDownSeconds) return undefined;
  return noteOnly(`${change} a replica waits for the ${formatSeconds(coolDownSeconds)} cool-down after the last change of the replica count (${formatSeconds(elapsed)} ago)`);
}

function scaleTo(replicas: number, reason: string): RuleOutcome {
  return { action: { kind: "scale", replicas, reason }, notes: [] };
}
