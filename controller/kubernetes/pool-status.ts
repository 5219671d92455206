import type { V1Deployment, V1Pod } from "@kubernetes/client-node";

import type { PoolConfig } from "../config/schema.ts";
import { variantAnnotation } from "./worker-objects.ts";

import type { conditionReasons, ModelPoolCondition, ModelPoolStatus } from "./modelpool-schema.ts";

type ConditionType = keyof typeof conditionReasons;

/** A condition as the controller decides it, before it gets a transition time. */
export interface ConditionUpdate<Type extends ConditionType = ConditionType> {
  type: Type;
  status: "True" | "False" | "Unknown";
  reason: (typeof conditionReasons)[Type][number];
  message: string;
}

/** The conditions of a pool whose Deployment exists, from the Deployment's status. */
export function workerConditions(deployment: V1Deployment, desiredReplicas: number): ConditionUpdate[] {
  return [readyCondition(deployment, desiredReplicas), progressingCondition(deployment, desiredReplicas), degradedCondition(deployment)];
}

function readyCondition(deployment: V1Deployment, desiredReplicas: number): ConditionUpdate<"Ready"> {
  const ready = deployment.status?.readyReplicas ?? 0;
  if (ready === 0) return { type: "Ready", status: "False", reason: "NoReplicasReady", message: "no worker replica is ready" };
  if (ready < desiredReplicas) {
    return { type: "Ready", status: "False", reason: "BelowMinimum", message: `${ready} of ${desiredReplicas} worker replicas are ready` };
  }
  return { type: "Ready", status: "True", reason: "ReplicasReady", message: `${ready} of ${desiredReplicas} worker replicas are ready` };
}

function progressingCondition(deployment: V1Deployment, desiredReplicas: number): ConditionUpdate<"Progressing"> {
  const status = deployment.status ?? {};
  const current = status.replicas ?? 0;
  const rolledOut = (status.observedGeneration ?? 0) >= (deployment.metadata?.generation ?? 0) && (status.updatedReplicas ?? 0) >= Math.min(current, desiredReplicas);
  if (current < desiredReplicas) {
    return { type: "Progressing", status: "True", reason: "ScalingUp", message: `scaling from ${current} to ${desiredReplicas} replicas` };
  }
  if (current > desiredReplicas) {
    return { type: "Progressing", status: "True", reason: "ScalingDown", message: `scaling from ${current} to ${desiredReplicas} replicas` };
  }
  if (!rolledOut) return { type: "Progressing", status: "True", reason: "RollingOut", message: "rolling out a new worker template" };
  return { type: "Progressing", status: "False", reason: "Stable", message: `${current} replicas run the current template` };
}

function degradedCondition(deployment: V1Deployment): ConditionUpdate<"Degraded"> {
  const failure = deployment.status?.conditions?.find(
    (condition) =>
      (condition.type === "ReplicaFailure" && condition.status === "True") ||
      (condition.type === "Progressing" && condition.status === "False" && condition.reason === "ProgressDeadlineExceeded"),
  );
  if (failure !== undefined) {
    return { type: "Degraded", status: "True", reason: "DeploymentFailed", message: failure.message ?? failure.reason ?? failure.type };
  }
  return { type: "Degraded", status: "False", reason: "AsExpected", message: "the worker Deployment reports no failure" };
}

export function invalidSpecCondition(message: string): ConditionUpdate<"Degraded"> {
  return { type: "Degraded", status: "True", reason: "InvalidSpec", message };
}

/**
 * Merges updates into existing conditions. lastTransitionTime moves only when a condition's status
 * changes, so it tells how long a pool has been in its state.
 */
export function mergeConditions(existing: readonly ModelPoolCondition[], updates: readonly ConditionUpdate[], generation: number, now: Date): ModelPoolCondition[] {
  const merged = existing.map((condition) => ({ ...condition }));
  for (const update of updates) {
    const index = merged.findIndex((condition) => condition.type === update.type);
    const previous = merged[index];
    const lastTransitionTime = previous !== undefined && previous.status === update.status ? previous.lastTransitionTime : now.toISOString();
    const condition: ModelPoolCondition = { ...update, observedGeneration: generation, lastTransitionTime };
    if (index === -1) merged.push(condition);
    else merged[index] = condition;
  }
  return merged;
}

/** Status fields the controller derives from the Deployment. */
export function replicaCounts(deployment: V1Deployment, desiredReplicas: number): Pick<ModelPoolStatus, "replicas" | "readyReplicas" | "desiredReplicas"> {
  return { replicas: deployment.status?.replicas ?? 0, readyReplicas: deployment.status?.readyReplicas ?? 0, desiredReplicas };
}

/** Returns whether a pod serves: its Ready condition is True and it is not terminating. */
export function isPodReady(pod: V1Pod): boolean {
  if (pod.metadata?.deletionTimestamp !== undefined) return false;
  return pod.status?.conditions?.some((condition) => condition.type === "Ready" && condition.status === "True") === true;
}

/**
 * Lists each pod with the variant it serves, and finds the lowest rung among them. A pod the runtime has not yet
 * annotated serves the variant it started on, which the pool's ConfigMap names.
 */
export function replicaVariants(pods: readonly V1Pod[], config: PoolConfig, startVariant: string): Pick<ModelPoolStatus, "replicaStatuses" | "lowestRung"> {
  const replicaStatuses = pods
    .filter((pod) => pod.metadata?.name !== undefined && pod.metadata.deletionTimestamp === undefined)
    .map((pod) => ({ name: pod.metadata!.name!, variant: pod.metadata?.annotations?.[variantAnnotation] ?? startVariant, ready: isPodReady(pod) }))
    .sort((a, b) => a.name.localeCompare(b.name));
  const rungs = replicaStatuses.map((replica) => config.variants.findIndex((variant) => variant.quant === replica.variant)).filter((rung) => rung >= 0);
  // An explicit undefined clears a lowest rung left from earlier pods, because status updates merge.
  if (rungs.length === 0) return { replicaStatuses, lowestRung: undefined };
  return { replicaStatuses, lowestRung: config.variants[Math.max(...rungs)]!.quant };
}
