import { createHash } from "node:crypto";

import type { V1ConfigMap, V1Container, V1Deployment, V1EnvVar, V1OwnerReference, V1PodSpec, V1Service, V1Volume } from "@kubernetes/client-node";

import type { PoolConfig } from "../config/schema.ts";
import { modelPoolApiVersion, type ModelPoolSpec } from "./modelpool-schema.ts";

/** The ModelPool fields the desired objects depend on. */
export interface PoolIdentity {
  name: string;
  namespace: string;
  uid: string;
}

export const workerPort = 8000;
export const modelsMountPath = "/models";
export const poolLabel = "spillway.dev/pool";
/** Pod annotation with the quant the pod serves, written after each ladder step, so a new leader reads it back. */
export const variantAnnotation = "spillway.dev/variant";
export const workerAdminKeyEnv = "SPILLWAY_ADMIN_KEY";

/** Seconds the preStop hook waits so that endpoints stop routing to a terminating pod before it drains. */
export const preStopSeconds = 5;
export const drainSeconds = 30;
const terminationMarginSeconds = 10;
const cacheVolumeName = "model-cache";

/** The labels of every object the controller creates for a pool, also the selector of its pods. */
export function workerLabels(pool: string): Record<string, string> {
  return {
    "app.kubernetes.io/name": "spillway-worker",
    "app.kubernetes.io/instance": pool,
    "app.kubernetes.io/component": "worker",
    "app.kubernetes.io/managed-by": "spillway",
    [poolLabel]: pool,
  };
}

export function workerSelector(pool: string): Record<string, string> {
  return { "app.kubernetes.io/name": "spillway-worker", [poolLabel]: pool };
}

const objectSuffix = "-worker";
/** Service names are DNS-1035 labels, so the worker objects' names must fit in 63 characters. */
const maxObjectNameLength = 63;

/**
 * The name of a pool's worker Deployment, Service and ConfigMap: `<pool>-worker`. A pool name too long for
 * that keeps its first characters and gets a hash of the whole name, so two long names never collide.
 */
export function workerObjectName(pool: string): string {
  if (pool.length + objectSuffix.length <= maxObjectNameLength) return `${pool}${objectSuffix}`;
  const hash = createHash("sha256").update(pool).digest("hex").slice(0, 8);
  const prefix = pool.slice(0, maxObjectNameLength - objectSuffix.length - hash.length - 1).replace(/-+$/, "");
  return `${prefix}-${hash}${objectSuffix}`;
}

export function ownerReferenceTo(pool: PoolIdentity): V1OwnerReference {
  return { apiVersion: modelPoolApiVersion, kind: "ModelPool", name: pool.name, uid: pool.uid, controller: true, blockOwnerDeletion: true };
}

/**
 * Returns the replica count the Deployment should run. A count the control loop set within the pool's
 * bounds is kept. A count outside them, or none yet, moves to the nearest bound.
 */
export function desiredReplicaCount(spec: ModelPoolSpec, current: number | undefined): number {
  return Math.min(spec.replicas.max, Math.max(spec.replicas.min, current ?? spec.replicas.min));
}

/** Cluster-wide settings of every worker pod, from the controller's command line. */
export interface WorkerPodSettings {
  /** Secret whose `admin-key` entry the workers take as their admin key, so the controller can switch variants. */
  adminKeySecret?: string;
}

export const adminKeySecretKey = "admin-key";
/** ConfigMap key with the quant new pods of the pool start on, so they join on the pool's current rung. */
export const startVariantKey = "start-variant";
export const startVariantEnv = "SPILLWAY_START_VARIANT";

/** Builds the pool's ConfigMap, which names the variant its new pods start on. */
export function desiredConfigMap(pool: PoolIdentity, startVariant: string): V1ConfigMap {
  return {
    apiVersion: "v1",
    kind: "ConfigMap",
    metadata: { name: workerObjectName(pool.name), namespace: pool.namespace, labels: workerLabels(pool.name), ownerReferences: [ownerReferenceTo(pool)] },
    data: { [startVariantKey]: startVariant },
  };
}

export function desiredService(pool: PoolIdentity): V1Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: workerObjectName(pool.name), namespace: pool.namespace, labels: workerLabels(pool.name), ownerReferences: [ownerReferenceTo(pool)] },
    spec: {
      clusterIP: "None",
      selector: workerSelector(pool.name),
      ports: [{ name: "http", port: workerPort, targetPort: "http", protocol: "TCP" }],
      publishNotReadyAddresses: false,
    },
  };
}

export function desiredDeployment(pool: PoolIdentity, spec: ModelPoolSpec, config: PoolConfig, replicas: number, settings: WorkerPodSettings = {}): V1Deployment {
  const labels = workerLabels(pool.name);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: workerObjectName(pool.name), namespace: pool.namespace, labels, ownerReferences: [ownerReferenceTo(pool)] },
    spec: {
      replicas,
      selector: { matchLabels: workerSelector(pool.name) },
      template: { metadata: { labels }, spec: podSpec(pool, spec, config, settings) },
    },
  };
}

function podSpec(pool: PoolIdentity, spec: ModelPoolSpec, config: PoolConfig, settings: WorkerPodSettings): V1PodSpec {
  const fetcher = fetchContainer(spec, config);
  const pod: V1PodSpec = {
    containers: [workerContainer(pool, spec, config, settings)],
    volumes: [cacheVolume(spec)],
    terminationGracePeriodSeconds: preStopSeconds + drainSeconds + terminationMarginSeconds,
  };
  if (fetcher !== undefined) pod.initContainers = [fetcher];
  if (spec.nodeSelector !== undefined) pod.nodeSelector = { ...spec.nodeSelector };
  if (spec.tolerations !== undefined) pod.tolerations = spec.tolerations.map((toleration) => ({ ...toleration }));
  if (spec.priorityClassName !== undefined) pod.priorityClassName = spec.priorityClassName;
  return pod;
}

function workerContainer(pool: PoolIdentity, spec: ModelPoolSpec, config: PoolConfig, settings: WorkerPodSettings): V1Container {
  const env: V1EnvVar[] = [];
  if (settings.adminKeySecret !== undefined) {
    env.push({ name: workerAdminKeyEnv, valueFrom: { secretKeyRef: { name: settings.adminKeySecret, key: adminKeySecretKey } } });
  }
  if (config.variants.length > 1) {
    // Read when the container starts, so moving the pool's rung changes new pods without rolling the Deployment.
    env.push({ name: startVariantEnv, valueFrom: { configMapKeyRef: { name: workerObjectName(pool.name), key: startVariantKey, optional: true } } });
  }
  const container: V1Container = {
    name: "worker",
    image: spec.image,
    command: ["spillway"],
    args: workerArguments(spec, config),
    ports: [{ name: "http", containerPort: workerPort, protocol: "TCP" }],
    volumeMounts: [{ name: cacheVolumeName, mountPath: modelsMountPath, readOnly: true }],
    readinessProbe: { httpGet: { path: "/readyz", port: "http" }, periodSeconds: 5, failureThreshold: 2 },
    // Loading a large model can take minutes; the liveness probe must not kill a pod that is still loading.
    livenessProbe: { httpGet: { path: "/healthz", port: "http" }, initialDelaySeconds: 30, periodSeconds: 10, failureThreshold: 6 },
    lifecycle: { preStop: { sleep: { seconds: preStopSeconds } } },
  };
  if (env.length > 0) container.env = env;
  if (spec.resources !== undefined) container.resources = resourceQuantities(spec.resources);
  return container;
}

/** The `spillway worker` flags for the pool's ladder, highest quality first, starting on the top rung. */
export function workerArguments(spec: ModelPoolSpec, config: PoolConfig): string[] {
  const useGpu = spec.resources?.limits?.["nvidia.com/gpu"] !== undefined;
  const args = ["worker"];
  for (const variant of config.variants) {
    args.push("--variant", `${variant.quant}=${variantPath(config.name, variant.quant, variant.model)}`);
  }
  if (config.variants.length > 1) args.push("--start-variant-env", startVariantEnv);
  args.push(
    "--name", config.name,
    "--host", "0.0.0.0",
    "--port", String(workerPort),
    "--slots", String(config.slotsPerReplica),
    "--queue", String(config.queueSize),
    "--context-size", String(config.contextSize),
    "--gpu", useGpu ? "cuda" : "false",
    "--drain-seconds", String(drainSeconds),
    "--admin-key-env", workerAdminKeyEnv,
    "--models-dir", modelsMountPath,
  );
  if (config.threadsPerReplica !== undefined) args.push("--threads", String(config.threadsPerReplica));
  return args;
}

/** Where a variant lives in the pod: downloaded files under the cache volume, paths as given. */
export function variantPath(pool: string, quant: string, model: string): string {
  return isDownloaded(model) ? `${modelsMountPath}/${pool}/${quant}.gguf` : model;
}

function isDownloaded(model: string): boolean {
  return /^(hf|https?):/i.test(model);
}

/**
 * An init container that downloads each `hf:` or `https:` variant into the cache volume with
 * node-llama-cpp's `pull`, skipping files already there, so a shared claim downloads a model once.
 */
function fetchContainer(spec: ModelPoolSpec, config: PoolConfig): V1Container | undefined {
  const downloads = config.variants.filter((variant) => isDownloaded(variant.model));
  if (downloads.length === 0 || spec.modelCache?.persistentVolumeClaim?.readOnly === true) return undefined;
  const steps = downloads.map((variant) => {
    const target = variantPath(config.name, variant.quant, variant.model);
    return `[ -f ${quote(target)} ] && echo ${quote(`cached ${target}`)} || npx --no-install node-llama-cpp pull --dir ${quote(`${modelsMountPath}/${config.name}`)} --filename ${quote(`${variant.quant}.gguf`)} ${quote(variant.model)}`;
  });
  return {
    name: "fetch-models",
    image: spec.image,
    command: ["sh", "-c", ["set -e", `mkdir -p ${quote(`${modelsMountPath}/${config.name}`)}`, ...steps].join("\n")],
    volumeMounts: [{ name: cacheVolumeName, mountPath: modelsMountPath }],
  };
}

function quote(value: string): string {
  return `'${value.replaceAll("'", `'"'"'`)}'`;
}

function cacheVolume(spec: ModelPoolSpec): V1Volume {
  const claim = spec.modelCache?.persistentVolumeClaim;
  if (claim !== undefined) {
    return { name: cacheVolumeName, persistentVolumeClaim: { claimName: claim.claimName, readOnly: claim.readOnly } };
  }
  const emptyDir = spec.modelCache?.emptyDir;
  const volume: V1Volume = { name: cacheVolumeName, emptyDir: {} };
  if (emptyDir?.medium === "Memory") volume.emptyDir!.medium = "Memory";
  if (emptyDir?.sizeLimit !== undefined) volume.emptyDir!.sizeLimit = String(emptyDir.sizeLimit);
  return volume;
}

/** Quantities as strings, the form the API server returns, so that comparisons with stored objects hold. */
function resourceQuantities(resources: NonNullable<ModelPoolSpec["resources"]>): V1Container["resources"] {
  const strings = (record: Record<string, string | number> | undefined) =>
    record === undefined ? undefined : Object.fromEntries(Object.entries(record).map(([key, value]) => [key, String(value)]));
  const result: NonNullable<V1Container["resources"]> = {};
  const requests = strings(resources.requests);
  const limits = strings(resources.limits);
  if (requests !== undefined) result.requests = requests;
  if (limits !== undefined) result.limits = limits;
  return result;
}
