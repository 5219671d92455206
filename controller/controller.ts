import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

import type { Logger } from "pino";

import { ControlLoop } from "./autoscaler/control-loop.ts";
import { GeminiBackend, resolveGeminiApiKey } from "./backends/gemini.ts";
import { WorkerBackend } from "./backends/worker.ts";
import type { SpillwayConfig } from "./config/schema.ts";
import { isLoopback, KeyRing } from "./gateway/auth.ts";
import type { BudgetStatus } from "./gateway/admission.ts";
import { ServiceTimes, type GatewayContext, type OverflowBackend } from "./gateway/context.ts";
import { PoolQueues } from "./gateway/pool-queue.ts";
import { ReplicaTable } from "./gateway/replicas.ts";
import { createGatewayApp } from "./gateway/server.ts";
import { Ledger } from "./metering/ledger.ts";
import { createUsageHandler } from "./metering/usage-endpoint.ts";
import { GatewayMetrics, replicaStates } from "./metrics.ts";
import { LocalRuntime } from "./runtime/local.ts";
import type { ScalingRuntime } from "./runtime/types.ts";
import { StartupError } from "./startup-error.ts";
import { metricsTelemetry } from "./telemetry.ts";

export interface ControllerOptions {
  config: SpillwayConfig;
  logger: Logger;
  /** JSON lines file that keeps metered usage across restarts; in memory only when unset. */
  statePath?: string;
  env?: NodeJS.ProcessEnv;
  /** Overrides for the local runtime (tests use them for thread counts and the worker command). */
  runtime?: Partial<Omit<ConstructorParameters<typeof LocalRuntime>[0], "config" | "table" | "logger">>;
  /** Fetch for the Gemini backend, for tests against a mock. */
  geminiFetch?: typeof fetch;
  /** How long shutdown waits for in-flight gateway requests. */
  drainSeconds?: number;
  /** JSON file that keeps the autoscaling planner's state across restarts; in memory only when unset. */
  plannerStatePath?: string;
  /** Seconds between control loop ticks; 0 turns autoscaling and ladder steps off. */
  controlIntervalSeconds?: number;
}

export interface RunningController<Runtime extends ScalingRuntime = LocalRuntime> {
  url: string;
  table: ReplicaTable;
  runtime: Runtime;
  controlLoop: ControlLoop | undefined;
  ledger: Ledger;
  metrics: GatewayMetrics;
  stop(): Promise<void>;
}

/** Gateway parts that a runtime needs when it is created. */
export interface RuntimeParts {
  table: ReplicaTable;
  metrics: GatewayMetrics;
}

/** Settings in which a controller process on one machine differs from one in a cluster. */
export interface ControllerVariant<Runtime extends ScalingRuntime> {
  createRuntime: (parts: RuntimeParts) => Runtime;
  /** Whether the control loop starts with the process; a cluster starts it on winning leadership instead. */
  startControlLoop: boolean;
  /**
   * Whether this process bills replica time now. In a cluster only the leader does, so that several
   * controller replicas do not bill one pool's pods several times.
   */
  billsReplicaTime?: () => boolean;
}

/**
 * Starts the controller process: the gateway on the configured address and the local runtime with each
 * pool's minimum replicas, plus a one-second tick that bills replica time and refreshes pool gauges.
 */
export function startController(options: ControllerOptions): Promise<RunningController> {
  return startControllerWith(options, {
    createRuntime: ({ table }) => new LocalRuntime({ config: options.config, table, logger: options.logger, ...options.runtime }),
    startControlLoop: true,
  });
}

/** Starts the gateway, the control loop and the billing tick on the runtime the variant creates. */
export async function startControllerWith<Runtime extends ScalingRuntime>(
  options: Omit<ControllerOptions, "runtime">,
  variant: ControllerVariant<Runtime>,
): Promise<RunningController<Runtime>> {
  const { config, logger } = options;
  const env = options.env ?? process.env;
  const keys = new KeyRing(config, env);
  if (keys.open && !isLoopback(config.gateway.host)) {
    throw new StartupError(
      `No API keys are configured, so the gateway may only listen on loopback, but gateway.host is ${config.gateway.host}. ` +
        "Add tenants under auth.keys or listen on 127.0.0.1.",
    );
  }

  const metrics = new GatewayMetrics();
  for (const pool of config.pools) metrics.addPool(pool.name);
  const table = new ReplicaTable();
  const queues = new PoolQueues(table);
  const ledger = new Ledger({ config, metrics, ...(options.statePath === undefined ? {} : { statePath: options.statePath }), logger });
  const gemini = createOverflowBackend(config, logger, metrics, env, options.geminiFetch);
  const runtime = variant.createRuntime({ table, metrics });

  const ctx: GatewayContext = {
    config,
    table,
    queues,
    worker: new WorkerBackend({ logger }),
    gemini,
    runtime,
    metering: { record: (usage) => ledger.record(usage), budgetStatus: (tenant) => budgetStatus(config, ledger, tenant) },
    telemetry: metricsTelemetry(metrics),
    serviceTimes: new ServiceTimes(),
    logger,
  };
  table.on("change", (replica) => {
    metrics.setReplicaQuant(replica.pool, replica.id, replica.quant);
    queues.dispatch(replica.pool);
  });

  const controlInterval = options.controlIntervalSeconds ?? 2;
  const controlLoop = controlInterval > 0
    ? new ControlLoop({
        config,
        table,
        queues,
        runtime,
        metrics,
        serviceTimes: ctx.serviceTimes,
        logger,
        intervalSeconds: controlInterval,
        ...(options.plannerStatePath === undefined ? {} : { statePath: options.plannerStatePath }),
      })
    : undefined;

  let draining = false;
  let started = false;
  const app = createGatewayApp({
    ctx,
    keys,
    registry: metrics.registry,
    usage: createUsageHandler({ ledger }),
    draining: () => draining,
    started: () => started,
    ...(controlLoop === undefined ? {} : { controlStatus: (pool: string) => controlLoop.status(pool) }),
  });
  const server: Server = app.listen(config.gateway.port, config.gateway.host);
  await once(server, "listening");
  const address = server.address() as AddressInfo;
  const url = `http://${address.family === "IPv6" ? `[${address.address}]` : address.address}:${address.port}`;
  logger.info({ url, pools: config.pools.map((pool) => pool.name), overflow: gemini !== undefined, apiKeys: !keys.open }, "gateway listening");
  if (keys.open) logger.warn("no API keys configured: serving every request as tenant 'anonymous' on loopback only");

  const tick = startTick(ctx, ledger, metrics, variant.billsReplicaTime ?? (() => true));
  await runtime.start();
  started = true;
  if (variant.startControlLoop) controlLoop?.start();

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= (async () => {
      draining = true;
      logger.info("controller stopping");
      clearInterval(tick);
      controlLoop?.stop();
      queues.rejectAll(new Error("the controller is shutting down"));
      await closeServer(server, options.drainSeconds ?? 30);
      ctx.worker.close();
      await runtime.stop();
      logger.info("controller stopped");
    })();
    return stopping;
  };
  return { url, table, runtime, controlLoop, ledger, metrics, stop };
}

function createOverflowBackend(
  config: SpillwayConfig,
  logger: Logger,
  metrics: GatewayMetrics,
  env: NodeJS.ProcessEnv,
  geminiFetch: typeof fetch | undefined,
): OverflowBackend | undefined {
  const geminiConfig = config.overflow.gemini;
  if (geminiConfig === undefined || !config.overflow.enabled) return undefined;
  let apiKey: string;
  try {
    apiKey = resolveGeminiApiKey(geminiConfig, env);
  } catch (error) {
    // Local serving still works without a key, so a missing key disables overflow instead of the controller.
    logger.warn({ problem: error instanceof Error ? error.message : String(error) }, "overflow to Gemini is disabled: no API key");
    return undefined;
  }
  metrics.circuitOpen.set({ backend: "gemini" }, 0);
  const backend = new GeminiBackend(geminiConfig, {
    logger,
    apiKey,
    ...(geminiFetch === undefined ? {} : { fetch: geminiFetch }),
    onCircuitStateChange: (state) => metrics.circuitOpen.set({ backend: "gemini" }, state === "open" ? 1 : 0),
  });
  return Object.assign(backend, { available: () => backend.circuitState !== "open" });
}

function budgetStatus(config: SpillwayConfig, ledger: Ledger, tenant: string): BudgetStatus {
  if (!ledger.isOverBudget(tenant)) return "ok";
  const tenantConfig = config.auth.keys.find((key) => key.name === tenant);
  return tenantConfig?.onBudgetExhausted === "reject" ? "rejected" : "local_only";
}

/** Bills live replica time to the ledger and refreshes the pool gauges, once a second. */
function startTick(ctx: GatewayContext, ledger: Ledger, metrics: GatewayMetrics, billsReplicaTime: () => boolean): NodeJS.Timeout {
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    const elapsedSeconds = (now - last) / 1000;
    last = now;
    for (const pool of ctx.config.pools) {
      const replicas = ctx.table.forPool(pool.name);
      const live = replicas.filter((replica) => replica.state !== "failed").length;
      // NOTE: with several controller replicas, the leader bills all replica time but attributes it only to
      // the requests it served itself, so the pool's total is right while the split across tenants is skewed.
      if (live > 0 && billsReplicaTime()) ledger.accrueReplicaTime(pool.name, live * elapsedSeconds);
      for (const state of replicaStates) {
        metrics.poolReplicas.set({ pool: pool.name, state }, replicas.filter((replica) => replica.state === state).length);
      }
      metrics.queueDepth.set({ pool: pool.name }, ctx.queues.length(pool.name));
    }
  }, 1000);
  timer.unref();
  return timer;
}

async function closeServer(server: Server, drainSeconds: number): Promise<void> {
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeIdleConnections();
  const timer = setTimeout(() => server.closeAllConnections(), drainSeconds * 1000);
  await closed;
  clearTimeout(timer);
}
