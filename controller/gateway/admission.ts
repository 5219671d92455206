import type { ReplicaState } from "./replicas.ts";

export type OverflowReason = "saturated" | "cold_start" | "quality_floor" | "context_length" | "local_error";

/** The load of one replica, as admission reads it. */
export interface ReplicaLoad {
  id: string;
  state: ReplicaState;
  rung: number;
  slots: number;
  outstanding: number;
}

/** Whether a tenant may still spend, from its budget and configured action. */
export type BudgetStatus = "ok" | "local_only" | "rejected";

/** Everything one admission decision depends on; nothing else is read. */
export interface AdmissionInput {
  replicas: readonly ReplicaLoad[];
  /** Lowest rung the request may be served from. */
  floorRung: number;
  queueLength: number;
  queueCapacity: number;
  /** Recent mean seconds a local request occupies a slot. */
  serviceSeconds: number;
  /** Target time to first token. */
  sloSeconds: number;
  /** Estimated prompt tokens, against the pool's context per slot. */
  promptTokens: number;
  contextSize: number;
  /** Overflow configured, enabled, and Gemini's circuit not open. */
  overflowAvailable: boolean;
  budget: BudgetStatus;
  /** The pool may start a replica (no replica yet and a maximum above zero). */
  canStartReplica: boolean;
}

export type AdmissionDecision =
  | { action: "local"; replicaId: string }
  | { action: "queue"; startReplica: boolean }
  | { action: "overflow"; reason: OverflowReason; startReplica: boolean }
  | { action: "reject"; status: 400 | 429 | 503; code: string; message: string; retryAfterSeconds?: number };

/**
 * Decides where one request goes: a local replica now, the pool's queue, Gemini (with the reason), or
 * nowhere. A pure function of its input, so every rule is tested as a table.
 */
export function decideAdmission(input: AdmissionInput): AdmissionDecision {
  if (input.budget === "rejected") {
    return reject(429, "budget_exceeded", "This API key's spending budget is used up. Raise the budget or wait for the next period.", 60);
  }
  const overflow = input.overflowAvailable && input.budget === "ok";

  if (input.promptTokens > input.contextSize) {
    if (overflow) return { action: "overflow", reason: "context_length", startReplica: false };
    return reject(400, "context_length_exceeded", `The prompt needs about ${input.promptTokens} tokens, more than this pool's context of ${input.contextSize}. Shorten the messages.`);
  }

  const ready = input.replicas.filter((replica) => replica.state === "ready");
  const eligible = ready.filter((replica) => replica.rung <= input.floorRung);
  const coming = input.replicas.some((replica) => replica.state === "starting" && replica.rung <= input.floorRung);
  const startReplica = input.canStartReplica;

  if (eligible.length === 0) {
    const reason: OverflowReason = ready.length === 0 ? "cold_start" : "quality_floor";
    if (overflow) return { action: "overflow", reason, startReplica };
    if ((coming || startReplica) && input.queueLength < input.queueCapacity) return { action: "queue", startReplica };
    return queueFull(input, ready.length === 0 ? "No replica of this pool is ready yet." : "No ready replica meets this request's quality floor.");
  }

  const free = pickLeastLoaded(eligible.filter((replica) => replica.outstanding < replica.slots));
  if (free !== undefined && input.queueLength === 0) return { action: "local", replicaId: free.id };

  const predictedWait = predictedQueueSeconds(input, eligible);
  const hasRoom = input.queueLength < input.queueCapacity;
  if (hasRoom && predictedWait <= input.sloSeconds) return { action: "queue", startReplica: false };
  if (overflow) return { action: "overflow", reason: "saturated", startReplica: false };
  if (hasRoom) return { action: "queue", startReplica: false };
  return queueFull(input, "Every local slot is busy and the queue is full.", predictedWait);
}

/** Least outstanding work first; among equals, the higher-quality rung, then the id for stability. */
export function pickLeastLoaded<T extends { id: string; rung: number; outstanding: number; slots: number }>(replicas: readonly T[]): T | undefined {
  let best: T | undefined;
  for (const replica of replicas) {
    if (best === undefined || compareLoad(replica, best) < 0) best = replica;
  }
  return best;
}

function compareLoad(a: { id: string; rung: number; outstanding: number; slots: number }, b: typeof a): number {
  const loadA = a.outstanding / a.slots;
  const loadB = b.outstanding / b.slots;
  if (loadA !== loadB) return loadA - loadB;
  if (a.rung !== b.rung) return a.rung - b.rung;
  return a.id.localeCompare(b.id);
}

/** Seconds until a request joining the queue now would get a slot: the queue ahead drains over all slots. */
export function predictedQueueSeconds(input: Pick<AdmissionInput, "queueLength" | "serviceSeconds">, eligible: readonly ReplicaLoad[]): number {
  const slots = eligible.reduce((sum, replica) => sum + replica.slots, 0);
  if (slots === 0) return Number.POSITIVE_INFINITY;
  const busy = eligible.reduce((sum, replica) => sum + Math.min(replica.outstanding, replica.slots), 0);
  const freeNow = slots - busy;
  const ahead = input.queueLength + 1 - freeNow;
  if (ahead <= 0) return 0;
  return Math.ceil(ahead / slots) * input.serviceSeconds;
}

function queueFull(input: AdmissionInput, why: string, predictedWait?: number): AdmissionDecision {
  const wait = predictedWait !== undefined && Number.isFinite(predictedWait) ? predictedWait : input.serviceSeconds;
  const retryAfter = Math.min(60, Math.max(1, Math.ceil(wait)));
  let detail = "Overflow to Gemini is off.";
  if (input.budget === "local_only") detail = "This API key's budget allows local serving only.";
  else if (input.overflowAvailable === false) detail = "Overflow to Gemini is off or unavailable.";
  return reject(429, "rate_limit_exceeded", `${why} ${detail} Retry after ${retryAfter} s.`, retryAfter);
}

function reject(status: 400 | 429 | 503, code: string, message: string, retryAfterSeconds?: number): AdmissionDecision {
  return { action: "reject", status, code, message, ...(retryAfterSeconds === undefined ? {} : { retryAfterSeconds }) };
}
