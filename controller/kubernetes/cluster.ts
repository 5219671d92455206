import { CoreV1Api, type KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";

import type { ControlLoop } from "../autoscaler/control-loop.ts";
import type { SpillwayConfig } from "../config/schema.ts";
import { startControllerWith, type RunningController } from "../controller.ts";
import { ModelPoolController } from "./controller.ts";
import { EventRecorder } from "./events.ts";
import { PoolRegistry } from "./pool-registry.ts";
import { KubernetesRuntime } from "./runtime.ts";

export interface ClusterControllerOptions {
  /** Gateway, auth, routing and overflow settings; pools come from the namespace's ModelPools. */
  config: SpillwayConfig;
  kubeConfig: KubeConfig;
  namespace: string;
  /** This instance's name in the Lease and in Events. */
  identity: string;
  leaseName?: string;
  /** Secret whose `admin-key` entry worker pods take as their admin key. */
  workerAdminSecret?: string;
  /** The same admin key, which the controller sends to switch a worker's variant. */
  workerAdminKey?: string;
  logger: Logger;
  env?: NodeJS.ProcessEnv;
  statePath?: string;
  plannerStatePath?: string;
  controlIntervalSeconds?: number;
  drainSeconds?: number;
  geminiFetch?: typeof fetch;
  /** Lease timings and watch retry pauses, which tests shorten. */
  leaseDurationSeconds?: number;
  renewDeadlineSeconds?: number;
  retryPeriodSeconds?: number;
  watchRetryDelayMs?: number;
}

export interface RunningClusterController extends RunningController<KubernetesRuntime> {
  pools: PoolRegistry;
  reconciler: ModelPoolController;
}

/**
 * Starts `spillway controller`. Every instance serves the gateway for the namespace's ModelPools and routes
 * to their ready worker pods. The instance holding the Lease also reconciles the pools into Deployments and
 * runs the control loop, which scales those Deployments and steps pods along the ladder.
 */
export async function startClusterController(options: ClusterControllerOptions): Promise<RunningClusterController> {
  const { kubeConfig, namespace, identity, logger, config } = options;
  let leading = false;
  // Set once the gateway has started; leadership callbacks before that find it unset.
  const loop: { current?: ControlLoop } = {};

  const reconciler = new ModelPoolController(
    kubeConfig,
    {
      namespace,
      identity,
      ...(options.leaseName === undefined ? {} : { leaseName: options.leaseName }),
      ...(options.leaseDurationSeconds === undefined ? {} : { leaseDurationSeconds: options.leaseDurationSeconds }),
      ...(options.renewDeadlineSeconds === undefined ? {} : { renewDeadlineSeconds: options.renewDeadlineSeconds }),
      ...(options.retryPeriodSeconds === undefined ? {} : { retryPeriodSeconds: options.retryPeriodSeconds }),
      ...(options.watchRetryDelayMs === undefined ? {} : { watchRetryDelayMs: options.watchRetryDelayMs }),
      worker: options.workerAdminSecret === undefined ? {} : { adminKeySecret: options.workerAdminSecret },
      onLeadershipChange: (nowLeading) => {
        leading = nowLeading;
        if (nowLeading) loop.current?.start();
        else loop.current?.stop();
      },
    },
    logger,
  );

  const running = await startControllerWith(options, {
    createRuntime: ({ table, metrics }) =>
      new KubernetesRuntime({
        kubeConfig,
        namespace,
        config,
        pools: new PoolRegistry({ kubeConfig, namespace, config, metrics, logger, watchRetryDelayMs: options.watchRetryDelayMs }),
        table,
        events: new EventRecorder(kubeConfig.makeApiClient(CoreV1Api), identity, logger),
        logger,
        adminKey: options.workerAdminKey,
        isLeader: () => leading,
        onPoolChanged: (pool) => reconciler.enqueue(pool),
        watchRetryDelayMs: options.watchRetryDelayMs,
      }),
    startControlLoop: false,
    billsReplicaTime: () => leading,
  });
  if (running.controlLoop !== undefined) loop.current = running.controlLoop;
  // Campaigning starts only now, so the control loop exists when leadership arrives.
  reconciler.start();

  const stop = async () => {
    await reconciler.stop();
    await running.stop();
  };
  return { ...running, stop, pools: running.runtime.pools, reconciler };
}
