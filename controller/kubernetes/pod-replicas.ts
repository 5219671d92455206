import type { V1Pod } from "@kubernetes/client-node";

import type { PoolConfig } from "../config/schema.ts";
import type { Replica } from "../gateway/replicas.ts";
import { isPodReady } from "./pool-status.ts";
import { poolLabel, variantAnnotation, workerPort } from "./worker-objects.ts";

/** A worker pod as the runtime tracks it between watch events. */
export interface PodView {
  name: string;
  pool: string;
  /** Base URL of the worker in the pod; undefined until the pod has an IP. */
  url: string | undefined;
  ready: boolean;
  terminating: boolean;
  /** Quant the pod's annotation names, if any. */
  annotatedQuant: string | undefined;
  createdAt: number | undefined;
}

/** Reads what the runtime needs from a worker pod; undefined for a pod that is not a worker. */
export function viewPod(pod: V1Pod): PodView | undefined {
  const name = pod.metadata?.name;
  const pool = pod.metadata?.labels?.[poolLabel];
  if (name === undefined || pool === undefined) return undefined;
  const created = pod.metadata?.creationTimestamp;
  return {
    name,
    pool,
    url: workerUrl(pod),
    ready: isPodReady(pod) && pod.status?.phase === "Running",
    terminating: pod.metadata?.deletionTimestamp !== undefined || pod.status?.phase === "Failed" || pod.status?.phase === "Succeeded",
    annotatedQuant: pod.metadata?.annotations?.[variantAnnotation],
    createdAt: created === undefined ? undefined : new Date(created).getTime(),
  };
}

/** Builds the worker's URL from the pod IP and the container port named `http`, which tests set to a real port. */
function workerUrl(pod: V1Pod): string | undefined {
  const ip = pod.status?.podIP;
  if (ip === undefined || ip === "") return undefined;
  const port = pod.spec?.containers.flatMap((container) => container.ports ?? []).find((candidate) => candidate.name === "http")?.containerPort ?? workerPort;
  return `http://${ip.includes(":") ? `[${ip}]` : ip}:${port}`;
}

/**
 * Builds the gateway's replica for a pod. A pod serves requests only once it is ready and its worker has
 * reported the variant it serves, so routing never guesses a replica's quality.
 */
export function replicaOf(view: PodView, pool: PoolConfig, quant: string | undefined): Omit<Replica, "outstanding"> {
  const found = quant === undefined ? -1 : pool.variants.findIndex((variant) => variant.quant.toUpperCase() === quant.toUpperCase());
  const rung = Math.max(0, found);
  return {
    id: view.name,
    pool: pool.name,
    url: view.url ?? "",
    quant: pool.variants[rung]!.quant,
    rung,
    state: view.ready && view.url !== undefined && found >= 0 ? "ready" : "starting",
    slots: pool.slotsPerReplica,
  };
}
