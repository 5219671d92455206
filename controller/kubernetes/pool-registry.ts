import { EventEmitter } from "node:events";

import type { KubeConfig } from "@kubernetes/client-node";
import type { Logger } from "pino";

import type { PoolConfig, SpillwayConfig } from "../config/schema.ts";
import type { GatewayMetrics } from "../metrics.ts";
import type { ChangeType, ListWatch } from "./list-watch.ts";
import { modelPoolSchema, toPoolConfig } from "./modelpool-schema.ts";
import { watchModelPools, type StoredModelPool } from "./reconciler.ts";
import type { PoolIdentity } from "./worker-objects.ts";

export interface PoolRegistryOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** The configuration the gateway routes with: its `pools` array is rewritten in place as pools change. */
  config: SpillwayConfig;
  metrics: GatewayMetrics;
  logger: Logger;
  watchRetryDelayMs?: number;
}

/**
 * Keeps the gateway's pools equal to the valid ModelPools of a namespace. Every controller replica runs
 * one, leader or not, because every replica serves requests. The `pools` array is changed in place, since
 * the gateway, the ledger and the control loop hold references to it.
 */
export class PoolRegistry extends EventEmitter<{ change: [string] }> {
  private readonly stored = new Map<string, StoredModelPool>();
  private readonly watch: ListWatch<StoredModelPool>;
  /** The rejection logged for each pool, so an unchanged invalid pool is logged once. */
  private readonly rejections = new Map<string, string>();

  constructor(private readonly options: PoolRegistryOptions) {
    super();
    this.watch = watchModelPools(options.kubeConfig, options.namespace, (type, pool) => this.onChange(type, pool), options.logger, options.watchRetryDelayMs);
  }

  /** Resolves after the first list, so the gateway starts with every pool that exists. */
  start(): Promise<void> {
    return this.watch.start();
  }

  stop(): Promise<void> {
    return this.watch.stop();
  }

  /** Returns the ModelPool's identity for Events and status writes, or undefined for a pool not served. */
  identity(pool: string): PoolIdentity | undefined {
    const stored = this.stored.get(pool);
    if (stored === undefined || !this.options.config.pools.some((candidate) => candidate.name === pool)) return undefined;
    return { name: stored.metadata.name, namespace: stored.metadata.namespace, uid: stored.metadata.uid };
  }

  private onChange(type: ChangeType, pool: StoredModelPool): void {
    const name = pool.metadata.name;
    if (type === "DELETED" || pool.metadata.deletionTimestamp !== undefined) this.stored.delete(name);
    else this.stored.set(name, pool);
    this.rebuild();
    this.emit("change", name);
  }

  /** Rebuilds the served pools from the stored ModelPools, oldest first, so an older pool keeps a contested name. */
  private rebuild(): void {
    const { config, metrics, logger } = this.options;
    const before = new Set(config.pools.map((pool) => pool.name));
    const served: PoolConfig[] = [];
    const claimedNames = new Map<string, string>();
    for (const stored of [...this.stored.values()].sort(byCreation)) {
      const name = stored.metadata.name;
      const parsed = modelPoolSchema.safeParse(stored);
      const problem = parsed.success
        ? nameConflict(toPoolConfig(name, parsed.data.spec), claimedNames)
        : parsed.error.issues.map((issue) => `${issue.path.join(".")}: ${issue.message}`).join("; ");
      if (problem !== undefined) {
        if (this.rejections.get(name) !== problem) logger.warn({ pool: name, problem }, "not serving the ModelPool");
        this.rejections.set(name, problem);
        continue;
      }
      this.rejections.delete(name);
      const pool = toPoolConfig(name, parsed.data!.spec);
      for (const id of [pool.name, ...pool.aliases]) claimedNames.set(id, pool.name);
      served.push(pool);
    }
    config.pools.splice(0, config.pools.length, ...served);

    const after = new Set(served.map((pool) => pool.name));
    for (const name of after) {
      if (before.has(name)) continue;
      metrics.addPool(name);
      logger.info({ pool: name }, "serving pool");
    }
    for (const name of before) {
      if (after.has(name)) continue;
      void metrics.removePool(name);
      logger.info({ pool: name }, "stopped serving pool");
    }
  }
}

function nameConflict(pool: PoolConfig, claimedNames: Map<string, string>): string | undefined {
  for (const id of [pool.name, ...pool.aliases]) {
    const owner = claimedNames.get(id);
    if (owner !== undefined) return `the name '${id}' is already served by pool '${owner}'`;
  }
  return undefined;
}

function byCreation(a: StoredModelPool, b: StoredModelPool): number {
  const created = (pool: StoredModelPool) => (pool.metadata as { creationTimestamp?: string }).creationTimestamp ?? "";
  return created(a).localeCompare(created(b)) || a.metadata.name.localeCompare(b.metadata.name);
}
