import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";

import type { Logger } from "pino";

import { usableCpuCount } from "../../worker/threads.ts";
import type { PoolConfig, SpillwayConfig } from "../config/schema.ts";
import type { ReplicaState, ReplicaTable } from "../gateway/replicas.ts";
import { divideThreads } from "./threads.ts";
import type { ScalingRuntime } from "./types.ts";
import { switchVariant, workerAdminKeyEnv } from "./variant-switch.ts";
import { WorkerProcess, type WorkerExit } from "./worker-process.ts";

export interface LocalRuntimeOptions {
  config: SpillwayConfig;
  table: ReplicaTable;
  logger: Logger;
  /** Command that starts a worker, without the worker's options. Defaults to this checkout's `spillway worker`. */
  workerCommand?: string[];
  /** Environment variables for the workers, on top of the controller's own. */
  env?: NodeJS.ProcessEnv;
  /** Download cache for `hf:` models, passed as `--models-dir`. The worker's own default applies when unset. */
  modelsDirectory?: string;
  /** Compute backend, passed as `--gpu`. Defaults to `auto`. */
  gpu?: "auto" | "cuda" | "vulkan" | false;
  /** How long a stopping worker may drain its requests, passed as `--drain-seconds`. Defaults to 30. */
  drainSeconds?: number;
  /** CPUs to divide among replicas. Defaults to `usableCpuCount()`. */
  cpuCount?: number;
  /** Delays between restarts. Fields left out keep their `defaultRestartBackoff` value. */
  restartBackoff?: Partial<RestartBackoff>;
}

/** Exponential delays before a replica that exited unexpectedly is started again. */
export interface RestartBackoff {
  firstDelayMs: number;
  maxDelayMs: number;
  /** A replica that stayed ready this long starts again from `firstDelayMs` on its next exit. */
  resetAfterMs: number;
}

export const defaultRestartBackoff: RestartBackoff = { firstDelayMs: 1000, maxDelayMs: 30_000, resetAfterMs: 60_000 };

/** Doubles the delay with each consecutive failure (1 s, 2 s, 4 s … by default) up to the maximum. */
export function restartDelayMs(failures: number, backoff: RestartBackoff = defaultRestartBackoff): number {
  return Math.min(backoff.firstDelayMs * 2 ** Math.max(0, failures - 1), backoff.maxDelayMs);
}

/** One replica as `spillway status` shows it. */
export interface LocalReplicaView {
  id: string;
  pool: string;
  /** Undefined while the replica waits to be restarted. */
  pid: number | undefined;
  quant: string;
  state: ReplicaState;
  /** Times the process was started again after an unexpected exit. */
  restarts: number;
  /** Empty until the worker reports the address it listens on. */
  url: string;
}

interface LocalReplica {
  id: string;
  pool: PoolConfig;
  /** The controller's logger with `replica` and `pool` bound. */
  logger: Logger;
  /** Index of the served variant in the pool's ladder. */
  rung: number;
  process: WorkerProcess | undefined;
  url: string;
  state: ReplicaState;
  restarts: number;
  /** Unexpected exits since the replica last stayed ready for `resetAfterMs`. */
  failures: number;
  readySince: number | undefined;
  restartTimer: NodeJS.Timeout | undefined;
  /** When the current process was spawned, for the cold start time. */
  launchedAt: number;
  swapping: boolean;
}

const defaultWorkerCommand = [process.execPath, fileURLToPath(new URL("../../bin/spillway.js", import.meta.url)), "worker"];
const readinessTimeoutMs = 10_000;
/** Time a stopping worker gets beyond its drain time: it waits up to 5 s for aborted requests, then unloads the model. */
const stopGraceMs = 10_000;

/**
 * Runs each pool's replicas as `spillway worker` child processes on this machine, listening on
 * 127.0.0.1 with a port the kernel picks.
 *
 * The table follows each worker's lifecycle: `starting` from spawn (with an empty `url` until the
 * worker logs "worker listening"), `ready` once it logs "worker ready" and `/readyz` confirms it,
 * `failed` from an unexpected exit until the restart, `draining` during `stop()`, then removed.
 * A replica that exits unexpectedly, ready or not, is restarted after 1 s, 2 s, 4 s … up to 30 s,
 * and the delay starts again from 1 s once a replica has stayed ready for a minute.
 */
export class LocalRuntime implements ScalingRuntime {
  readonly #config: SpillwayConfig;
  readonly #table: ReplicaTable;
  readonly #logger: Logger;
  readonly #workerCommand: readonly string[];
  readonly #env: NodeJS.ProcessEnv;
  readonly #modelsDirectory: string | undefined;
  readonly #gpu: "auto" | "cuda" | "vulkan" | false;
  readonly #drainSeconds: number;
  readonly #threads: Map<string, number>;
  readonly #backoff: RestartBackoff;
  readonly #replicas = new Map<string, LocalReplica>();
  readonly #nextIndex = new Map<string, number>();
  /** Seconds from spawn to ready of each pool's latest replica start. */
  readonly #coldStarts = new Map<string, number>();
  /** Key for the workers' admin endpoint, new for every controller run and never logged. */
  readonly #adminKey = randomBytes(24).toString("hex");
  #started = false;
  #exitHookInstalled = false;
  #stopping: Promise<void> | undefined;

  constructor(options: LocalRuntimeOptions) {
    this.#config = options.config;
    this.#table = options.table;
    this.#logger = options.logger;
    this.#workerCommand = options.workerCommand ?? defaultWorkerCommand;
    this.#modelsDirectory = options.modelsDirectory;
    this.#gpu = options.gpu ?? "auto";
    this.#drainSeconds = options.drainSeconds ?? 30;
    this.#threads = divideThreads(options.config, options.cpuCount ?? usableCpuCount());
    this.#backoff = { ...defaultRestartBackoff, ...options.restartBackoff };
    // Workers must log at info or below, because the runtime reads their lifecycle from the info lines.
    const workerLogLevel = this.#logger.levelVal < 30 ? this.#logger.level : "info";
    this.#env = { ...process.env, SPILLWAY_LOG_LEVEL: workerLogLevel, ...options.env, [workerAdminKeyEnv]: this.#adminKey };
  }

  start(): Promise<void> {
    if (this.#started || this.#stopping !== undefined) return Promise.resolve();
    this.#started = true;
    for (const pool of this.#config.pools) {
      for (let index = 0; index < pool.replicas.min; index += 1) this.#addReplica(pool);
    }
    return Promise.resolve();
  }

  requestReplica(poolName: string): void {
    const pool = this.#pool(poolName);
    if (this.#stopping !== undefined) return;
    const replicas = [...this.#replicas.values()].filter((replica) => replica.pool === pool);
    const serving = replicas.some((replica) => replica.state === "starting" || replica.state === "ready");
    if (serving || replicas.length >= pool.replicas.max) return;
    this.#addReplica(pool);
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#stopAll();
    return this.#stopping;
  }

  replicas(): LocalReplicaView[] {
    return [...this.#replicas.values()].map((replica) => ({
      id: replica.id,
      pool: replica.pool.name,
      pid: replica.process?.running === true ? replica.process.pid : undefined,
      quant: this.#variant(replica).quant,
      state: replica.state,
      restarts: replica.restarts,
      url: replica.url,
    }));
  }

  setReplicaCount(poolName: string, count: number): void {
    const pool = this.#pool(poolName);
    if (this.#stopping !== undefined) return;
    const target = Math.min(pool.replicas.max, Math.max(pool.replicas.min, count));
    const active = [...this.#replicas.values()].filter((replica) => replica.pool === pool && replica.state !== "draining");
    for (let added = active.length; added < target; added += 1) this.#addReplica(pool);
    // Replicas that serve nothing go first, then the newest.
    const removable = [...active].sort((a, b) => Number(a.state === "ready") - Number(b.state === "ready") || b.launchedAt - a.launchedAt);
    for (const replica of removable.slice(0, Math.max(0, active.length - target))) {
      clearTimeout(replica.restartTimer);
      this.#stopReplica(replica).catch((error: unknown) => replica.logger.error({ err: error }, "stopping replica failed"));
    }
  }

  async setVariant(replicaId: string, rung: number): Promise<void> {
    const replica = this.#replicas.get(replicaId);
    if (replica === undefined) throw new Error(`Unknown replica '${replicaId}'.`);
    const target = replica.pool.variants[rung];
    if (target === undefined) throw new Error(`Pool '${replica.pool.name}' has no rung ${rung}.`);
    if (rung === replica.rung) return;
    if (replica.state !== "ready" || replica.swapping) throw new Error(`Replica '${replicaId}' is ${replica.swapping ? "already switching" : replica.state}.`);

    const from = this.#variant(replica).quant;
    replica.swapping = true;
    this.#setState(replica, replica.state);
    try {
      await switchVariant(replica.url, this.#adminKey, target.quant, this.#drainSeconds * 1000 + 120_000);
      replica.rung = rung;
      replica.logger.info({ from, to: target.quant }, "replica switched variant");
    } finally {
      replica.swapping = false;
      if (this.#replicas.has(replicaId)) this.#setState(replica, replica.state);
    }
  }

  coldStartSeconds(poolName: string): number | undefined {
    return this.#coldStarts.get(poolName);
  }

  /** Threads each replica of the pool runs with, by the rule in `divideThreads`. */
  threadsFor(poolName: string): number | undefined {
    return this.#threads.get(poolName);
  }

  #addReplica(pool: PoolConfig): void {
    const index = this.#nextIndex.get(pool.name) ?? 0;
    this.#nextIndex.set(pool.name, index + 1);
    const id = `${pool.name}-${index}`;
    const replica: LocalReplica = {
      id,
      pool,
      logger: this.#logger.child({ replica: id, pool: pool.name }),
      rung: 0,
      process: undefined,
      url: "",
      state: "starting",
      restarts: 0,
      failures: 0,
      readySince: undefined,
      restartTimer: undefined,
      launchedAt: Date.now(),
      swapping: false,
    };
    this.#replicas.set(replica.id, replica);
    if (!this.#exitHookInstalled) {
      process.on("exit", this.#killAll);
      this.#exitHookInstalled = true;
    }
    this.#launch(replica);
  }

  #launch(replica: LocalReplica): void {
    const { logger } = replica;
    const variant = this.#variant(replica);
    const child = new WorkerProcess([...this.#workerCommand, ...this.#workerArguments(replica)], this.#env, logger);
    replica.process = child;
    replica.launchedAt = Date.now();
    replica.swapping = false;
    replica.url = "";
    replica.readySince = undefined;
    this.#setState(replica, "starting");
    logger.info({ workerPid: child.pid, model: variant.model, quant: variant.quant, threads: this.#threads.get(replica.pool.name) }, "replica starting");

    child.on("listening", (url) => {
      if (replica.process !== child || replica.state !== "starting") return;
      replica.url = url;
      this.#setState(replica, "starting");
    });
    child.on("ready", () => {
      this.#confirmReady(replica, child).catch((error: unknown) => logger.error({ err: error }, "readiness check failed"));
    });
    child.on("exit", (exit) => this.#onExit(replica, child, exit));
  }

  #workerArguments(replica: LocalReplica): string[] {
    const { pool } = replica;
    // A ladder worker gets every variant, so it can switch without a restart; it starts on the replica's rung.
    const model = pool.variants.length > 1
      ? [...pool.variants.flatMap((variant) => ["--variant", `${variant.quant}=${variant.model}`]), "--start-variant", this.#variant(replica).quant]
      : ["--model", this.#variant(replica).model];
    const args = [
      ...model,
      "--admin-key-env", workerAdminKeyEnv,
      "--exit-with-parent",
      "--name", pool.name,
      "--host", "127.0.0.1",
      "--port", "0",
      "--slots", String(pool.slotsPerReplica),
      "--context-size", String(pool.contextSize),
      "--threads", String(this.#threads.get(pool.name) ?? 1),
      "--gpu", String(this.#gpu),
      "--drain-seconds", String(this.#drainSeconds),
      // The gateway forwards bodies up to its own limit, so the worker must accept as much.
      "--max-body-bytes", String(this.#config.gateway.maxBodyBytes),
    ];
    if (this.#modelsDirectory !== undefined) args.push("--models-dir", this.#modelsDirectory);
    return args;
  }

  /** Polls `/readyz` after the worker's "worker ready" line. A worker that never confirms is killed, and so restarted. */
  async #confirmReady(replica: LocalReplica, child: WorkerProcess): Promise<void> {
    const deadline = Date.now() + readinessTimeoutMs;
    for (;;) {
      const ready = await isReady(replica.url);
      // The process may have exited, or stop() begun, while the probe was in flight.
      if (!child.running || replica.process !== child || this.#stopping !== undefined) return;
      if (ready) {
        replica.readySince = Date.now();
        this.#coldStarts.set(replica.pool.name, (replica.readySince - replica.launchedAt) / 1000);
        this.#setState(replica, "ready");
        replica.logger.info({ workerPid: child.pid, url: replica.url }, "replica ready");
        return;
      }
      if (Date.now() >= deadline) {
        replica.logger.warn({ workerPid: child.pid, url: replica.url, timeoutMs: readinessTimeoutMs }, "replica logged ready but /readyz did not confirm it; killing it");
        child.kill("SIGKILL");
        return;
      }
      await delay(200);
    }
  }

  #onExit(replica: LocalReplica, child: WorkerProcess, exit: WorkerExit): void {
    if (replica.process !== child || this.#stopping !== undefined) return;
    const wasReady = replica.readySince !== undefined;
    if (wasReady && Date.now() - (replica.readySince ?? 0) >= this.#backoff.resetAfterMs) replica.failures = 0;
    replica.failures += 1;
    replica.process = undefined;
    this.#setState(replica, "failed");

    const delayMs = restartDelayMs(replica.failures, this.#backoff);
    const details = { workerPid: child.pid, code: exit.code, signal: exit.signal, reason: exit.reason, restartInSeconds: delayMs / 1000 };
    const message = wasReady ? "replica exited unexpectedly; restarting it" : "replica exited before it was ready; restarting it";
    replica.logger.warn(details, message);

    replica.restartTimer = setTimeout(() => {
      replica.restartTimer = undefined;
      if (this.#stopping !== undefined) return;
      replica.restarts += 1;
      this.#launch(replica);
    }, delayMs);
  }

  async #stopAll(): Promise<void> {
    const replicas = [...this.#replicas.values()];
    for (const replica of replicas) clearTimeout(replica.restartTimer);
    await Promise.all(replicas.map((replica) => this.#stopReplica(replica)));
    process.off("exit", this.#killAll);
    this.#exitHookInstalled = false;
  }

  async #stopReplica(replica: LocalReplica): Promise<void> {
    const { logger } = replica;
    const child = replica.process;
    if (child?.running === true) {
      this.#setState(replica, "draining");
      logger.info({ workerPid: child.pid }, "stopping replica");
      child.kill("SIGTERM");
      const boundMs = this.#drainSeconds * 1000 + stopGraceMs;
      const exit = await waitFor(child.exited, boundMs);
      if (exit === undefined) {
        logger.error({ workerPid: child.pid, waitedSeconds: boundMs / 1000 }, "replica did not stop after SIGTERM; sending SIGKILL");
        child.kill("SIGKILL");
        await child.exited;
      }
    }
    this.#table.remove(replica.id);
    this.#replicas.delete(replica.id);
    logger.info("replica stopped");
  }

  // An arrow function, so the same reference can be removed again. It must be synchronous, because it runs on process exit.
  readonly #killAll = (): void => {
    for (const replica of this.#replicas.values()) replica.process?.kill("SIGKILL");
  };

  #setState(replica: LocalReplica, state: ReplicaState): void {
    replica.state = state;
    this.#table.upsert({
      id: replica.id,
      pool: replica.pool.name,
      url: replica.url,
      quant: this.#variant(replica).quant,
      rung: replica.rung,
      state,
      slots: replica.pool.slotsPerReplica,
      swapping: replica.swapping,
    });
  }

  #pool(poolName: string): PoolConfig {
    const pool = this.#config.pools.find((candidate) => candidate.name === poolName);
    if (pool === undefined) {
      throw new Error(`Unknown pool '${poolName}'. Configured pools: ${this.#config.pools.map((candidate) => candidate.name).join(", ")}.`);
    }
    return pool;
  }

  #variant(replica: LocalReplica): PoolConfig["variants"][number] {
    const variant = replica.pool.variants[replica.rung];
    if (variant === undefined) throw new Error(`Pool '${replica.pool.name}' has no variant at rung ${replica.rung}.`);
    return variant;
  }
}

async function isReady(url: string): Promise<boolean> {
  if (url === "") return false;
  try {
    const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2000) });
    await response.body?.cancel();
    return response.ok;
  } catch {
    return false;
  }
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

/** Resolves with the promise's value, or with undefined after `milliseconds`. */
async function waitFor<T>(promise: Promise<T>, milliseconds: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), milliseconds);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
