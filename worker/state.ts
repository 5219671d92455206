import { ApiError } from "../api/errors.ts";
import type { CompletionDeps } from "./completions.ts";
import type { VariantManager } from "./variants.ts";

/** The worker's lifecycle: `ready` from the first loaded model until shutdown begins. */
export type WorkerPhase = "loading" | "ready" | "draining";

/** The state `/readyz` reports: the phase, refined by the variant manager while the worker is up. */
export type ReadinessState = WorkerPhase | "swapping" | "failed";

/** Mutable state the HTTP layer reads: the phase, and the loaded models once there are some. */
export interface WorkerState {
  phase: WorkerPhase;
  modelId: string;
  /** The ladder's quantizations as configured, reported until the first variant has loaded. */
  ladder: string[];
  variants: VariantManager | undefined;
  deps: CompletionDeps | undefined;
}

export function readinessState(state: WorkerState): ReadinessState {
  if (state.phase !== "ready") return state.phase;
  if (state.variants?.drainModeSwapping === true) return "swapping";
  if (state.variants?.failed === true) return "failed";
  return "ready";
}

/** Tells whether chat requests are accepted. During a drain-mode swap they queue for the new variant. */
export function acceptsRequests(state: WorkerState): boolean {
  const readiness = readinessState(state);
  return readiness === "ready" || readiness === "swapping";
}

export function notReady(state: ReadinessState): ApiError {
  const reasons: Record<ReadinessState, string> = {
    loading: "is still loading its model",
    ready: "is not ready",
    swapping: "is switching its model",
    draining: "is shutting down",
    failed: "has no model loaded after a failed swap",
  };
  return new ApiError(503, `This worker ${reasons[state]}. Retry on another replica or in a few seconds.`, {
    type: "server_error",
    code: "worker_not_ready",
    headers: { "retry-after": "1" },
  });
}
