/**
 * What the controller asks of a runtime. Runtimes execute decisions; they do not make them: the number
 * of replicas and their variants come from the gateway (scale from zero) and, later, the planner.
 */
export interface Runtime {
  /** Starts each pool's minimum replicas. Resolves once they are started, not necessarily ready. */
  start(): Promise<void>;
  /** Starts one replica of a pool that has none and may have one, for a request arriving cold. */
  requestReplica(pool: string): void;
  /** Stops every replica: each drains its in-flight requests first. */
  stop(): Promise<void>;
}

/** Operations the control loop needs from a runtime to carry out a plan. */
export interface ScalingRuntime extends Runtime {
  /** Starts or stops replicas until the pool has `count`; stopped replicas drain first. */
  setReplicaCount(pool: string, count: number): void;
  /** Switches a replica to another rung of its pool's ladder; resolves once it serves that variant. */
  setVariant(replicaId: string, rung: number): Promise<void>;
  /** Recent seconds from starting a replica of the pool to its readiness; undefined before the first. */
  coldStartSeconds(pool: string): number | undefined;
}
