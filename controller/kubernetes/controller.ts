import { AppsV1Api, CoordinationV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Deployment } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { EventRecorder } from "./events.ts";
import { LeaderElector, type LeaderElectionOptions } from "./leader-election.ts";
import { ListWatch, startWithRetry, type ChangeType } from "./list-watch.ts";
import { PoolReconciler, watchModelPools, type StoredModelPool } from "./reconciler.ts";
import { WorkQueue, type WorkQueueOptions } from "./work-queue.ts";
import { poolLabel, type WorkerPodSettings } from "./worker-objects.ts";

export interface ModelPoolControllerOptions extends Omit<LeaderElectionOptions, "namespace" | "leaseName"> {
  namespace: string;
  leaseName?: string;
  /** How often every known pool is reconciled even without a change. */
  resyncSeconds?: number;
  /** Pause before a failed watch opens again. */
  watchRetryDelayMs?: number;
  queue?: WorkQueueOptions;
  /** Settings every worker pod gets, such as the Secret with the admin key. */
  worker?: WorkerPodSettings;
  /** Called when this instance starts or stops leading, after reconciling started or before it stops. */
  onLeadershipChange?: (leading: boolean) => void;
}

export const defaultLeaseName = "spillway-controller";

/**
 * Reconciles the ModelPools of one namespace into worker Deployments and Services while it holds the
 * leader lease; standby instances only campaign.
 */
export class ModelPoolController {
  private readonly elector: LeaderElector;
  private readonly reconciler: PoolReconciler;
  private readonly pools = new Set<string>();
  private session: { queue: WorkQueue; watches: Array<{ stop(): Promise<void> }>; resync: NodeJS.Timeout; worker: Promise<void> } | undefined;
  private transition: Promise<void> = Promise.resolve();

  constructor(
    private readonly kubeConfig: KubeConfig,
    private readonly options: ModelPoolControllerOptions,
    private readonly logger: Logger,
  ) {
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const clients = { core, apps: kubeConfig.makeApiClient(AppsV1Api), customObjects: kubeConfig.makeApiClient(CustomObjectsApi) };
    this.reconciler = new PoolReconciler(clients, new EventRecorder(core, options.identity, logger), logger, options.worker);
    this.elector = new LeaderElector(
      kubeConfig.makeApiClient(CoordinationV1Api),
      { ...options, leaseName: options.leaseName ?? defaultLeaseName },
      { onStartedLeading: () => void this.chain(() => this.startReconciling()), onStoppedLeading: () => void this.chain(() => this.stopReconciling()) },
      logger,
    );
  }

  get isLeader(): boolean {
    return this.elector.isLeader;
  }

  start(): void {
    this.elector.start();
  }

  /** Reconciles a pool soon, when this instance leads; a standby ignores the request. */
  enqueue(pool: string): void {
    if (this.pools.has(pool)) this.session?.queue.add(pool);
  }

  async stop(): Promise<void> {
    await this.elector.stop();
    await this.chain(() => this.stopReconciling());
  }

  /** Runs leadership transitions one after another, so a quick lose-and-win never overlaps two sessions. */
  private chain(step: () => Promise<void>): Promise<void> {
    this.transition = this.transition.then(step).catch((error: unknown) => this.logger.error({ err: error }, "leadership transition failed"));
    return this.transition;
  }

  private async startReconciling(): Promise<void> {
    if (this.session !== undefined || !this.elector.isLeader) return;
    const queue = new WorkQueue(this.options.queue);
    const watches = [this.watchPools(queue), this.watchDeployments(queue)];
    const resync = setInterval(() => this.pools.forEach((pool) => queue.add(pool)), (this.options.resyncSeconds ?? 300) * 1000);
    const worker = queue.run(
      (pool) => this.reconcile(queue, pool),
      (pool, error) => this.logger.error({ err: error, pool }, "reconcile failed; retrying"),
    );
    this.session = { queue, watches, resync, worker };
    this.logger.info({ namespace: this.options.namespace }, "reconciling ModelPools");
    this.options.onLeadershipChange?.(true);
    for (const watch of watches) {
      await startWithRetry(() => watch.start(), () => this.session?.queue !== queue, this.logger);
    }
  }

  private async stopReconciling(): Promise<void> {
    const session = this.session;
    if (session === undefined) return;
    this.session = undefined;
    this.options.onLeadershipChange?.(false);
    clearInterval(session.resync);
    session.queue.stop();
    await Promise.all(session.watches.map((watch) => watch.stop()));
    await session.worker;
    this.pools.clear();
  }

  private async reconcile(queue: WorkQueue, pool: string): Promise<void> {
    const result = await this.reconciler.reconcile(this.options.namespace, pool);
    if (result === "gone") this.forget(queue, pool);
  }

  private forget(queue: WorkQueue, pool: string): void {
    this.pools.delete(pool);
    queue.forget(pool);
  }

  private watchPools(queue: WorkQueue): ListWatch<StoredModelPool> {
    const onChange = (type: ChangeType, pool: StoredModelPool) => {
      const name = pool.metadata.name;
      if (type === "DELETED") {
        this.forget(queue, name);
        return;
      }
      this.pools.add(name);
      queue.add(name);
    };
    return watchModelPools(this.kubeConfig, this.options.namespace, onChange, this.logger, this.options.watchRetryDelayMs);
  }

  /** Owned Deployments, so that hand edits, deletions and pod readiness reach the pool. */
  private watchDeployments(queue: WorkQueue): ListWatch<V1Deployment> {
    const { namespace } = this.options;
    const apps = this.kubeConfig.makeApiClient(AppsV1Api);
    const labelSelector = `app.kubernetes.io/managed-by=spillway,${poolLabel}`;
    return new ListWatch<V1Deployment>({
      kubeConfig: this.kubeConfig,
      path: `/apis/apps/v1/namespaces/${namespace}/deployments`,
      labelSelector,
      list: async () => {
        const list = await apps.listNamespacedDeployment({ namespace, labelSelector });
        return { items: list.items, resourceVersion: list.metadata?.resourceVersion ?? "" };
      },
      onChange: (_type, deployment) => {
        const pool = deployment.metadata?.labels?.[poolLabel];
        if (pool !== undefined && this.pools.has(pool)) queue.add(pool);
      },
      logger: this.logger,
      retryDelayMs: this.options.watchRetryDelayMs,
    });
  }
}
