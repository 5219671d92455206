import { CustomObjectsApi, type AppsV1Api, type CoreV1Api, type KubeConfig, type V1Deployment, type V1ObjectMeta, type V1Pod, type V1Service } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { isNotFound, retryOnConflict, wrapError } from "./api-errors.ts";
import type { EventRecorder } from "./events.ts";
import { ListWatch, type ChangeType } from "./list-watch.ts";
import { modelPoolGroup, modelPoolSchema, modelPoolVersion, toPoolConfig, type ModelPoolSpec, type ModelPoolStatus } from "./modelpool-schema.ts";
import type { PoolConfig } from "../config/schema.ts";
import { invalidSpecCondition, mergeConditions, replicaCounts, replicaVariants, workerConditions, type ConditionUpdate } from "./pool-status.ts";
import { isSubset } from "./subset.ts";
import {
  desiredConfigMap,
  desiredDeployment,
  desiredReplicaCount,
  desiredService,
  startVariantKey,
  workerObjectName,
  workerSelector,
  type PoolIdentity,
  type WorkerPodSettings,
} from "./worker-objects.ts";

export const modelPoolResource = { group: modelPoolGroup, version: modelPoolVersion, plural: "modelpools" } as const;

/** Builds a list-watch of the ModelPools of one namespace. */
export function watchModelPools(
  kubeConfig: KubeConfig,
  namespace: string,
  onChange: (type: ChangeType, pool: StoredModelPool) => void,
  logger: Logger,
  retryDelayMs?: number,
): ListWatch<StoredModelPool> {
  const customObjects = kubeConfig.makeApiClient(CustomObjectsApi);
  return new ListWatch<StoredModelPool>({
    kubeConfig,
    path: `/apis/${modelPoolResource.group}/${modelPoolResource.version}/namespaces/${namespace}/${modelPoolResource.plural}`,
    list: async () => {
      const list = (await customObjects.listNamespacedCustomObject({ ...modelPoolResource, namespace })) as { items: StoredModelPool[]; metadata?: { resourceVersion?: string } };
      return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? "" };
    },
    onChange,
    logger,
    retryDelayMs,
  });
}

/** A ModelPool as the API server returns it, before its spec is validated. */
export interface StoredModelPool {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace: string; uid: string; generation?: number; resourceVersion?: string; deletionTimestamp?: string };
  spec?: unknown;
  status?: ModelPoolStatus;
}

export interface ReconcilerClients {
  core: CoreV1Api;
  apps: AppsV1Api;
  customObjects: CustomObjectsApi;
}

export type ReconcileResult = "reconciled" | "gone";

/**
 * Brings one pool's worker Deployment and Service to their desired state and writes the pool's status.
 * Level-based: it reads everything it needs on each call, so running it again changes nothing.
 */
export class PoolReconciler {
  constructor(
    private readonly clients: ReconcilerClients,
    private readonly events: EventRecorder,
    private readonly logger: Logger,
    private readonly settings: WorkerPodSettings = {},
  ) {}

  async reconcile(namespace: string, name: string): Promise<ReconcileResult> {
    try {
      const pool = await this.readPool(namespace, name);
      if (pool === undefined || pool.metadata.deletionTimestamp !== undefined) return "gone";
      const parsed = modelPoolSchema.safeParse(pool);
      if (!parsed.success) {
        const message = parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ");
        await this.reportInvalidSpec(pool, message);
        return "reconciled";
      }
      await this.reconcileValid(pool, parsed.data.spec);
      return "reconciled";
    } catch (error) {
      throw wrapError(`reconciling pool ${name}`, error);
    }
  }

  private async reconcileValid(pool: StoredModelPool, spec: ModelPoolSpec): Promise<void> {
    const identity: PoolIdentity = { name: pool.metadata.name, namespace: pool.metadata.namespace, uid: pool.metadata.uid };
    const config = toPoolConfig(identity.name, spec);
    await this.ensureService(identity);
    const startVariant = await this.ensureConfigMap(identity, config);
    const deployment = await this.ensureDeployment(identity, spec, config);
    const desiredReplicas = deployment.spec?.replicas ?? 0;
    const pods = await this.listPods(identity);
    await this.writeStatus(pool, workerConditions(deployment, desiredReplicas), {
      ...replicaCounts(deployment, desiredReplicas),
      ...replicaVariants(pods, config, startVariant),
    });
  }

  private async readPool(namespace: string, name: string): Promise<StoredModelPool | undefined> {
    try {
      return (await this.clients.customObjects.getNamespacedCustomObject({ ...modelPoolResource, namespace, name })) as StoredModelPool;
    } catch (error) {
      if (isNotFound(error)) return undefined;
      throw error;
    }
  }

  private async reportInvalidSpec(pool: StoredModelPool, message: string): Promise<void> {
    const previous = pool.status?.conditions?.find((condition) => condition.type === "Degraded");
    const changed = previous?.reason !== "InvalidSpec" || previous.message !== message;
    await this.writeStatus(pool, [invalidSpecCondition(message)], {});
    if (changed) {
      this.logger.warn({ pool: pool.metadata.name, problem: message }, "invalid ModelPool spec");
      await this.events.warning(pool.metadata, "InvalidSpec", `invalid spec: ${message}`);
    }
  }

  private async ensureService(pool: PoolIdentity): Promise<V1Service> {
    const desired = desiredService(pool);
    const { core } = this.clients;
    const name = workerObjectName(pool.name);
    return retryOnConflict(async () => {
      const existing = await readOrUndefined(core.readNamespacedService({ name, namespace: pool.namespace }));
      if (existing === undefined) {
        const created = await core.createNamespacedService({ namespace: pool.namespace, body: desired });
        await this.events.normal(pool, "CreatedService", `created headless Service ${name}`);
        return created;
      }
      if (ownedFieldsMatch(existing, desired)) return existing;
      this.logger.info({ pool: pool.name, service: name }, "restoring the worker Service");
      return core.replaceNamespacedService({ name, namespace: pool.namespace, body: restoreOwnedFields(existing, desired) });
    });
  }

  /**
   * Keeps the ConfigMap that names the variant new pods start on. The runtime moves it along the ladder;
   * a value that left the ladder, after a spec change, goes back to the top rung.
   */
  private async ensureConfigMap(pool: PoolIdentity, config: PoolConfig): Promise<string> {
    const { core } = this.clients;
    const name = workerObjectName(pool.name);
    const top = config.variants[0]!.quant;
    return retryOnConflict(async () => {
      const existing = await readOrUndefined(core.readNamespacedConfigMap({ name, namespace: pool.namespace }));
      const current = existing?.data?.[startVariantKey];
      const startVariant = config.variants.some((variant) => variant.quant === current) ? current! : top;
      const desired = desiredConfigMap(pool, startVariant);
      if (existing === undefined) {
        await core.createNamespacedConfigMap({ namespace: pool.namespace, body: desired });
        return startVariant;
      }
      if (current === startVariant && ownedFieldsMatch(existing, desired)) return startVariant;
      const restored = restoreOwnedFields(existing, desired);
      await core.replaceNamespacedConfigMap({ name, namespace: pool.namespace, body: { ...restored, data: { ...existing.data, ...desired.data } } });
      return startVariant;
    });
  }

  private async ensureDeployment(pool: PoolIdentity, spec: ModelPoolSpec, config: PoolConfig): Promise<V1Deployment> {
    const { apps } = this.clients;
    const name = workerObjectName(pool.name);
    return retryOnConflict(async () => {
      const existing = await readOrUndefined(apps.readNamespacedDeployment({ name, namespace: pool.namespace }));
      const replicas = desiredReplicaCount(spec, existing?.spec?.replicas);
      const desired = desiredDeployment(pool, spec, config, replicas, this.settings);
      if (existing === undefined) {
        const created = await apps.createNamespacedDeployment({ namespace: pool.namespace, body: desired });
        await this.events.normal(pool, "CreatedDeployment", `created worker Deployment ${name} with ${replicas} replicas`);
        return created;
      }
      if (ownedFieldsMatch(existing, desired)) return existing;
      this.logger.info({ pool: pool.name, deployment: name }, "restoring the worker Deployment");
      const restored = await apps.replaceNamespacedDeployment({ name, namespace: pool.namespace, body: restoreOwnedFields(existing, desired) });
      const previous = existing.spec?.replicas;
      if (previous !== replicas) {
        await this.events.normal(pool, "Scaled", `scaled worker Deployment ${name} from ${previous ?? "unset"} to ${replicas} replicas to stay within spec.replicas`);
      }
      return restored;
    });
  }

  private async listPods(pool: PoolIdentity): Promise<V1Pod[]> {
    const labelSelector = Object.entries(workerSelector(pool.name)).map(([key, value]) => `${key}=${value}`).join(",");
    const list = await this.clients.core.listNamespacedPod({ namespace: pool.namespace, labelSelector });
    return list.items;
  }

  /** Writes status through the status subresource, skipping the write when nothing changed. */
  private async writeStatus(pool: StoredModelPool, updates: ConditionUpdate[], counts: Partial<ModelPoolStatus>): Promise<void> {
    const { customObjects } = this.clients;
    const { name, namespace } = pool.metadata;
    let current: StoredModelPool | undefined = pool;
    await retryOnConflict(async () => {
      current ??= await this.readPool(namespace, name);
      if (current === undefined) return;
      const generation = current.metadata.generation ?? 0;
      const previous = current.status ?? {};
      const status: ModelPoolStatus = { ...previous, ...counts, observedGeneration: generation, conditions: mergeConditions(previous.conditions ?? [], updates, generation, new Date()) };
      if (JSON.stringify(status) === JSON.stringify(previous)) return;
      const body = { ...current, status };
      current = undefined;
      await customObjects.replaceNamespacedCustomObjectStatus({ ...modelPoolResource, namespace, name, body });
    });
  }
}

async function readOrUndefined<Resource>(read: Promise<Resource>): Promise<Resource | undefined> {
  try {
    return await read;
  } catch (error) {
    if (isNotFound(error)) return undefined;
    throw error;
  }
}

interface OwnedObject {
  metadata?: V1ObjectMeta;
  spec?: object;
}

/**
 * Whether the controller's fields still hold their desired values. Fields the API server defaults, or
 * that others add, are not compared, so they never cause an update.
 */
export function ownedFieldsMatch(existing: OwnedObject, desired: OwnedObject): boolean {
  const ownerReference = desired.metadata?.ownerReferences?.[0];
  const owned = ownerReference === undefined || (existing.metadata?.ownerReferences ?? []).some((reference) => isSubset(ownerReference, reference));
  return owned && isSubset(desired.metadata?.labels ?? {}, existing.metadata?.labels ?? {}) && isSubset(desired.spec ?? {}, existing.spec ?? {});
}

/** Sets the controller's fields on a copy of the stored object and keeps everything else, resourceVersion included. */
export function restoreOwnedFields<Resource extends OwnedObject>(existing: Resource, desired: Resource): Resource {
  const ownerReferences = (existing.metadata?.ownerReferences ?? []).filter((reference) => reference.controller !== true);
  return {
    ...existing,
    metadata: {
      ...existing.metadata,
      labels: { ...existing.metadata?.labels, ...desired.metadata?.labels },
      ownerReferences: [...(desired.metadata?.ownerReferences ?? []), ...ownerReferences],
    },
    spec: { ...existing.spec, ...desired.spec },
  };
}
