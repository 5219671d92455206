import { AppsV1Api, CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig, type V1Pod } from "@kubernetes/client-node";
import type { Logger } from "pino";

import type { PoolConfig, SpillwayConfig } from "../config/schema.ts";
import type { ReplicaTable } from "../gateway/replicas.ts";
import type { ScalingRuntime } from "../runtime/types.ts";
import { readReadiness, switchVariant } from "../runtime/variant-switch.ts";
import { retryOnConflict, wrapError } from "./api-errors.ts";
import type { EventRecorder } from "./events.ts";
import { ListWatch, startWithRetry } from "./list-watch.ts";
import { replicaOf, viewPod, type PodView } from "./pod-replicas.ts";
import type { PoolRegistry } from "./pool-registry.ts";
import { modelPoolResource } from "./reconciler.ts";
import { poolLabel, startVariantKey, variantAnnotation, workerObjectName, type PoolIdentity } from "./worker-objects.ts";

export interface KubernetesRuntimeOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** The live configuration: its pools follow the namespace's ModelPools. */
  config: SpillwayConfig;
  pools: PoolRegistry;
  table: ReplicaTable;
  events: EventRecorder;
  logger: Logger;
  /** The workers' admin key, which variant switches need; without it the ladder cannot step. */
  adminKey: string | undefined;
  /** Whether this controller replica leads; only the leader writes pod annotations. */
  isLeader: () => boolean;
  /** Called after the runtime changed a pool, so that its status is reconciled soon. */
  onPoolChanged?: (pool: string) => void;
  /** How long a variant switch may take, loading included. */
  switchTimeoutMs?: number;
  watchRetryDelayMs?: number;
}

const probeRetryMs = 1000;
/** Pod annotation the ReplicaSet controller reads to choose which pods a scale-down removes first (Kubernetes 1.22+). */
const deletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost";

/**
 * Runs pools on Kubernetes. The gateway's replicas are the ready worker pods it watches, and scaling writes
 * the worker Deployment's scale subresource. A ladder step sends the switch to the pod's worker, then
 * records the variant in a pod annotation, the pool's ConfigMap (new pods start there) and the ModelPool's
 * status. Stopping the runtime leaves the pods running, because they belong to the cluster.
 */
export class KubernetesRuntime implements ScalingRuntime {
  private readonly core: CoreV1Api;
  private readonly apps: AppsV1Api;
  private readonly customObjects: CustomObjectsApi;
  private readonly watch: ListWatch<V1Pod>;
  private readonly pods = new Map<string, PodView>();
  /** The quant each ready pod's worker reported, read again whenever the pod becomes ready. */
  private readonly quants = new Map<string, string>();
  private readonly probing = new Set<string>();
  private readonly seenReady = new Set<string>();
  private readonly coldStarts = new Map<string, number>();
  /** Scale writes per pool run one after another, so two plans never interleave their reads and writes. */
  private readonly scaling = new Map<string, Promise<void>>();
  private stopped = false;

  constructor(private readonly options: KubernetesRuntimeOptions) {
    const { kubeConfig, namespace } = options;
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.apps = kubeConfig.makeApiClient(AppsV1Api);
    this.customObjects = kubeConfig.makeApiClient(CustomObjectsApi);
    const labelSelector = `app.kubernetes.io/managed-by=spillway,${poolLabel}`;
    this.watch = new ListWatch<V1Pod>({
      kubeConfig,
      path: `/api/v1/namespaces/${namespace}/pods`,
      labelSelector,
      list: async () => {
        const list = await this.core.listNamespacedPod({ namespace, labelSelector });
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? "" };
      },
      onChange: (type, pod) => this.onPod(type === "DELETED", pod),
      logger: options.logger,
      retryDelayMs: options.watchRetryDelayMs,
    });
    options.pools.on("change", (pool) => this.refreshPool(pool));
  }

  /** The pools this runtime serves, from the namespace's ModelPools. */
  get pools(): PoolRegistry {
    return this.options.pools;
  }

  /** Lists the ModelPools and then the worker pods, retrying until both lists succeed, and follows them. */
  async start(): Promise<void> {
    await startWithRetry(() => this.options.pools.start(), () => this.stopped, this.options.logger);
    await startWithRetry(() => this.watch.start(), () => this.stopped, this.options.logger);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([this.watch.stop(), this.options.pools.stop()]);
  }

  requestReplica(pool: string): void {
    if (this.options.table.forPool(pool).length > 0) return;
    this.enqueueScale(pool, (current) => Math.max(current, 1), "a request arrived for a pool with no replica");
  }

  setReplicaCount(pool: string, count: number): void {
    this.enqueueScale(pool, () => count, "the control loop's plan");
  }

  async setVariant(replicaId: string, rung: number): Promise<void> {
    const { table } = this.options;
    const replica = table.get(replicaId);
    if (replica === undefined) throw new Error(`Unknown replica '${replicaId}'.`);
    const pool = this.poolConfig(replica.pool);
    const target = pool?.variants[rung];
    if (pool === undefined || target === undefined) throw new Error(`Pool '${replica.pool}' has no rung ${rung}.`);
    if (rung === replica.rung) return;
    if (replica.state !== "ready" || replica.swapping === true) throw new Error(`Replica '${replicaId}' is ${replica.swapping === true ? "already switching" : replica.state}.`);
    try {
      await this.switchReplica(replicaId, pool, target.quant);
    } catch (error) {
      // A user must act on these (a missing admin key, a worker that cannot load the variant), so they become Events.
      await this.warn(pool.name, "LadderStepFailed", `replica ${replicaId} could not switch to ${target.quant}`, error);
      throw error;
    }
  }

  private async switchReplica(replicaId: string, pool: PoolConfig, quant: string): Promise<void> {
    const { table, logger } = this.options;
    if (this.options.adminKey === undefined) throw new Error("no admin key is set for the workers, so the controller cannot switch variants; pass --worker-admin-secret");
    const replica = table.get(replicaId)!;
    const from = replica.quant;
    table.upsert({ ...replica, swapping: true });
    try {
      await switchVariant(replica.url, this.options.adminKey, quant, this.options.switchTimeoutMs ?? 150_000);
      this.quants.set(replicaId, quant);
    } finally {
      const current = table.get(replicaId);
      if (current !== undefined) table.upsert({ ...current, swapping: false });
      this.refreshPod(replicaId);
    }
    logger.info({ pool: pool.name, replica: replicaId, from, to: quant }, "replica switched variant");
    await this.recordLadderStep(pool, replicaId, from, quant);
  }

  coldStartSeconds(pool: string): number | undefined {
    return this.coldStarts.get(pool);
  }

  private poolConfig(name: string): PoolConfig | undefined {
    return this.options.config.pools.find((pool) => pool.name === name);
  }

  private onPod(deleted: boolean, pod: V1Pod): void {
    const view = viewPod(pod);
    const name = pod.metadata?.name;
    if (name === undefined) return;
    if (deleted || view === undefined || view.terminating) {
      this.forget(name);
      return;
    }
    this.pods.set(name, view);
    // A pod that stops being ready may restart its container on the start variant, so its quant is read again.
    if (!view.ready) this.quants.delete(name);
    this.refreshPod(name);
  }

  private forget(name: string): void {
    this.pods.delete(name);
    this.quants.delete(name);
    this.seenReady.delete(name);
    this.options.table.remove(name);
  }

  private refreshPool(pool: string): void {
    for (const view of this.pods.values()) {
      if (view.pool === pool) this.refreshPod(view.name);
    }
  }

  /** Brings the gateway's replica for a pod up to date; the pod joins routing once its worker's quant is known. */
  private refreshPod(name: string): void {
    const view = this.pods.get(name);
    if (view === undefined) return;
    const pool = this.poolConfig(view.pool);
    if (pool === undefined) {
      this.options.table.remove(name);
      return;
    }
    if (view.ready && !this.quants.has(name)) this.probe(view);
    const replica = this.options.table.upsert(replicaOf(view, pool, this.quants.get(name)));
    if (replica.state === "ready" && !this.seenReady.has(name)) {
      this.seenReady.add(name);
      if (view.createdAt !== undefined) this.coldStarts.set(pool.name, (Date.now() - view.createdAt) / 1000);
    }
    const quant = this.quants.get(name);
    if (quant !== undefined && quant !== view.annotatedQuant && this.options.isLeader()) this.annotate(view, quant);
  }

  /** Asks a ready pod's worker which variant it serves, retrying while the pod stays ready. */
  private probe(view: PodView): void {
    if (this.probing.has(view.name) || view.url === undefined) return;
    this.probing.add(view.name);
    void readReadiness(view.url).then((readiness) => {
      this.probing.delete(view.name);
      const current = this.pods.get(view.name);
      if (this.stopped || current === undefined || !current.ready) return;
      const quant = readiness?.ready === true && typeof readiness.quant === "string" ? readiness.quant : undefined;
      if (quant === undefined) {
        setTimeout(() => this.refreshPod(view.name), probeRetryMs).unref();
        return;
      }
      this.quants.set(view.name, this.poolConfig(view.pool)?.variants.find((variant) => variant.quant.toUpperCase() === quant.toUpperCase())?.quant ?? quant);
      this.refreshPod(view.name);
    });
  }

  private annotate(view: PodView, quant: string): void {
    view.annotatedQuant = quant;
    this.setPodAnnotation(view.name, variantAnnotation, quant).catch((error: unknown) => {
      view.annotatedQuant = undefined;
      this.options.logger.warn({ err: wrapError(`annotating pod ${view.name}`, error), replica: view.name }, "recording the pod's variant failed");
    });
  }

  private async setPodAnnotation(pod: string, key: string, value: string): Promise<void> {
    const { namespace } = this.options;
    const current = await this.core.readNamespacedPod({ name: pod, namespace });
    const add = { op: "add", path: `/metadata/annotations/${key.replaceAll("~", "~0").replaceAll("/", "~1")}`, value };
    // Adding the whole map would replace existing annotations, so it is sent only when the pod has none.
    const body = current.metadata?.annotations === undefined ? [{ op: "add", path: "/metadata/annotations", value: { [key]: value } }] : [add];
    await this.core.patchNamespacedPod({ name: pod, namespace, body });
  }

  /**
   * Marks each pod with its outstanding requests as its deletion cost before a scale-down, so the
   * ReplicaSet removes the idlest ready pod rather than one in the middle of several streams. Pods that
   * are not ready go first regardless, by the ReplicaSet's own ranking.
   */
  private async markDeletionCosts(pool: string): Promise<void> {
    await Promise.all(
      this.options.table.forPool(pool).map((replica) =>
        this.setPodAnnotation(replica.id, deletionCostAnnotation, String(replica.outstanding)).catch((error: unknown) => {
          this.options.logger.warn({ err: wrapError(`annotating pod ${replica.id}`, error), replica: replica.id }, "setting the pod's deletion cost failed");
        }),
      ),
    );
  }

  private enqueueScale(pool: string, target: (current: number) => number, reason: string): void {
    const previous = this.scaling.get(pool) ?? Promise.resolve();
    const next = previous.then(() => this.scale(pool, target, reason)).catch(async (error: unknown) => {
      this.options.logger.error({ err: error, pool }, "scaling the worker Deployment failed");
      await this.warn(pool, "ScaleFailed", "scaling the worker Deployment failed", error);
    });
    this.scaling.set(pool, next);
  }

  private async scale(poolName: string, target: (current: number) => number, reason: string): Promise<void> {
    const pool = this.poolConfig(poolName);
    const identity = this.options.pools.identity(poolName);
    if (pool === undefined || identity === undefined || this.stopped) return;
    const name = workerObjectName(poolName);
    const { namespace } = this.options;
    let change: { from: number; to: number } | undefined;
    await retryOnConflict(async () => {
      const scale = await this.apps.readNamespacedDeploymentScale({ name, namespace });
      const from = scale.spec?.replicas ?? 0;
      const to = Math.min(pool.replicas.max, Math.max(pool.replicas.min, target(from)));
      change = undefined;
      if (to === from) return;
      if (to < from) await this.markDeletionCosts(poolName);
      await this.apps.replaceNamespacedDeploymentScale({ name, namespace, body: { ...scale, spec: { ...scale.spec, replicas: to } } });
      change = { from, to };
    });
    if (change === undefined) return;
    this.options.logger.info({ pool: poolName, from: change.from, to: change.to, reason }, "scaled the worker Deployment");
    await this.options.events.normal(identity, "Scaled", `scaled from ${change.from} to ${change.to} replicas: ${reason}`);
    await this.patchStatus(identity, { lastScale: { time: new Date().toISOString(), fromReplicas: change.from, toReplicas: change.to } });
    this.options.onPoolChanged?.(poolName);
  }

  private async recordLadderStep(pool: PoolConfig, replica: string, from: string, to: string): Promise<void> {
    const identity = this.options.pools.identity(pool.name);
    if (identity === undefined) return;
    await this.moveStartVariant(identity, pool);
    await this.options.events.normal(identity, "LadderStep", `replica ${replica} switched from ${from} to ${to}`);
    await this.patchStatus(identity, { lastLadderStep: { time: new Date().toISOString(), replica, fromVariant: from, toVariant: to } });
    this.options.onPoolChanged?.(pool.name);
  }

  /** Points new pods at the lowest rung any replica serves, so a pod added under load joins where the pool is. */
  private async moveStartVariant(identity: PoolIdentity, pool: PoolConfig): Promise<void> {
    const rungs = this.options.table.forPool(pool.name).map((replica) => replica.rung);
    const quant = pool.variants[Math.max(0, ...rungs)]!.quant;
    const name = workerObjectName(pool.name);
    try {
      await retryOnConflict(async () => {
        const configMap = await this.core.readNamespacedConfigMap({ name, namespace: identity.namespace });
        if (configMap.data?.[startVariantKey] === quant) return;
        await this.core.replaceNamespacedConfigMap({ name, namespace: identity.namespace, body: { ...configMap, data: { ...configMap.data, [startVariantKey]: quant } } });
      });
    } catch (error) {
      this.options.logger.warn({ err: wrapError(`updating ConfigMap ${name}`, error), pool: pool.name }, "moving the start variant of new pods failed");
    }
  }

  /** Records a Warning Event on the pool's ModelPool with what failed and the error's message. */
  private async warn(pool: string, reason: string, failedAction: string, error: unknown): Promise<void> {
    const identity = this.options.pools.identity(pool);
    if (identity === undefined) return;
    const message = error instanceof Error ? error.message : String(error);
    await this.options.events.warning(identity, reason, `${failedAction}: ${message}`);
  }

  /** Merges fields into the ModelPool's status; a failure is logged, because the step itself succeeded. */
  private async patchStatus(identity: PoolIdentity, status: Record<string, unknown>): Promise<void> {
    try {
      await this.customObjects.patchNamespacedCustomObjectStatus(
        { ...modelPoolResource, namespace: identity.namespace, name: identity.name, body: { status } },
        setHeaderOptions("Content-Type", PatchStrategy.MergePatch),
      );
    } catch (error) {
      this.options.logger.warn({ err: wrapError(`writing the status of pool ${identity.name}`, error), pool: identity.name }, "status update failed");
    }
  }
}
