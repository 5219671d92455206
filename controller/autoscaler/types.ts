import type { ReplicaState } from "../gateway/replicas.ts";

/** One replica as the planner observes it. */
export interface ReplicaObservation {
  id: string;
  state: ReplicaState;
  /** Ladder rung it serves: 0 is the highest quality. */
  rung: number;
  /** True while the replica is switching variants. */
  swapping: boolean;
  slots: number;
  outstanding: number;
}

/** A pool's state at one control tick, gathered by the control loop from the gateway and the runtime. */
export interface PoolObservation {
  /** Milliseconds since the Unix epoch. */
  at: number;
  replicas: readonly ReplicaObservation[];
  queueDepth: number;
  /** Requests per second that overflowed as `saturated` since the previous tick. */
  saturatedOverflowRate: number;
  /** Mean seconds a local request held a slot, recently. */
  serviceSeconds: number;
  /** Measured decode tokens per second per rung (index = rung); undefined where nothing was measured yet. */
  decodeRates: ReadonlyArray<number | undefined>;
  /** Recent seconds from starting a replica to its readiness; undefined before the first start. */
  coldStartSeconds: number | undefined;
  /** Whether the last request arrived for a pool with no replica (scale from zero). */
  demandWithoutReplica: boolean;
}

/** State the planner keeps between ticks. It is persisted, so a restart neither resets timers nor bursts. */
export interface PlannerState {
  /** Smoothed pressure of the previous tick, as its plan reported it. */
  pressure: number;
  /** Exponential moving average of demand, in slots. */
  demand: number;
  /** When pressure rose above `pressureHigh` and stayed; undefined while it is not above. */
  highSince: number | undefined;
  /** When pressure fell below `pressureLow` and stayed; undefined while it is not below. */
  lowSince: number | undefined;
  /** Last ladder step of the pool, in either direction. */
  lastStepAt: number | undefined;
  /** Last change of the replica count. */
  lastScaleAt: number | undefined;
  /** Time of the previous observation, for the moving average. */
  observedAt: number | undefined;
}

export type Direction = "down" | "up";

/** One change the runtime should make. */
export type PlanAction =
  | { kind: "scale"; replicas: number; reason: string }
  | { kind: "step"; replicaId: string; fromRung: number; toRung: number; direction: Direction; reason: string };

/** A tick's decisions, with the inputs that led to them for the info log. */
export interface PoolPlan {
  actions: PlanAction[];
  pressure: number;
  /** Human-readable notes on what was considered and not done (a rung skipped as not faster, a dwell). */
  notes: string[];
}
