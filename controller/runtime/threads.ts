import type { SpillwayConfig } from "../config/schema.ts";

/**
 * Decides each pool's CPU threads per replica. A pool's `threadsPerReplica` wins when set. The other
 * pools share the CPUs those pools do not reserve (their `threadsPerReplica` × `replicas.max`), divided
 * evenly by the number of their replicas that can run at once (the sum of their `replicas.max`),
 * rounded down and at least 1. Sizing by `replicas.max` keeps the machine from being oversubscribed
 * when every pool has scaled up, at the cost of idle cores while fewer replicas run.
 */
export function divideThreads(config: SpillwayConfig, cpuCount: number): Map<string, number> {
  let reserved = 0;
  let sharingReplicas = 0;
  for (const pool of config.pools) {
    if (pool.threadsPerReplica === undefined) sharingReplicas += pool.replicas.max;
    else reserved += pool.threadsPerReplica * pool.replicas.max;
  }
  const shared = sharingReplicas === 0 ? 1 : Math.max(1, Math.floor((cpuCount - reserved) / sharingReplicas));
  return new Map(config.pools.map((pool) => [pool.name, pool.threadsPerReplica ?? shared]));
}
