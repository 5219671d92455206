import { pino } from "pino";

import type { BackendName } from "../backends/types.ts";
import type { PoolConfig, SpillwayConfig, TenantConfig } from "../config/schema.ts";
import type { GatewayMetrics } from "../metrics.ts";
import { AttributionWindow, splitProportionally } from "./attribution.ts";
import { Journal, type AccrualEntry, type JournalEntry, type JournalLogger, type UsageEntry } from "./journal.ts";
import { MinuteSeries, addBucket, emptyBucket, minuteOf, millisecondsPerMinute, type BucketValues } from "./minute-series.ts";
import {
  geminiCostNanoUsd,
  geminiPricesFrom,
  replicaCostNanoUsd,
  usdFromNano,
  usdPerMillionTokens,
  type GeminiPrices,
} from "./prices.ts";
import type { RecordedSpend, UsageGroup, UsageRecord, UsageRow } from "./types.ts";

/** The tenant that replica time is attributed to when no tenant used the pool's replicas. */
export const idleTenant = "idle";

/** Days of per-minute buckets kept, counted back from the start of the current UTC day: enough for any month. */
export const retentionDays = 35;

export type BudgetPeriod = "day" | "month";

export interface LedgerOptions {
  config: SpillwayConfig;
  metrics?: GatewayMetrics;
  /** Clock in milliseconds since the Unix epoch. */
  now?: () => number;
  /** JSON lines journal that keeps usage across restarts; without it the ledger lives in memory only. */
  statePath?: string;
  /** Receives journal warnings and write errors; defaults to a pino logger on stdout. */
  logger?: JournalLogger;
}

export interface SummaryQuery {
  /** Start of the range, inclusive, in milliseconds since the Unix epoch. */
  from: number;
  /** End of the range, exclusive. */
  to: number;
  groupBy: UsageGroup;
}

interface Series {
  tenant: string;
  pool: string;
  backend: BackendName;
  quant: string | null;
  minutes: MinuteSeries;
}

const millisecondsPerDay = 86_400_000;

/**
 * Prices and aggregates every metered token: per-minute buckets per (tenant, pool, backend, quant),
 * spend per tenant per UTC day for budgets, and the replica time of local pools split over tenants.
 */
export class Ledger {
  readonly #now: () => number;
  readonly #metrics: GatewayMetrics | undefined;
  readonly #prices: GeminiPrices;
  /** Read on every accrual, because a controller in a cluster adds and removes pools while it runs. */
  readonly #pools: readonly PoolConfig[];
  readonly #tenants: Map<string, TenantConfig>;
  readonly #series = new Map<string, Series>();
  /** Spend per tenant per UTC day (days since the Unix epoch), in nano-USD. */
  readonly #dailySpend = new Map<string, Map<number, number>>();
  readonly #window = new AttributionWindow();
  /** Fraction of a nano-USD of replica cost per pool, carried to the next accrual. It is not persisted. */
  readonly #carryNanoUsd = new Map<string, number>();
  readonly #journal: Journal | undefined;
  #retainedFromDay = Number.NEGATIVE_INFINITY;

  constructor(options: LedgerOptions) {
    this.#now = options.now ?? Date.now;
    this.#metrics = options.metrics;
    this.#prices = geminiPricesFrom(options.config);
    this.#pools = options.config.pools;
    this.#tenants = new Map(options.config.auth.keys.map((tenant) => [tenant.name, tenant]));

    if (options.statePath !== undefined) {
      const logger = options.logger ?? pino({ name: "ledger", level: process.env.SPILLWAY_LOG_LEVEL ?? "info" });
      this.#journal = new Journal(options.statePath, logger, () => this.#snapshot());
      for (const entry of this.#journal.read()) this.#apply(entry);
      this.#dropExpired();
      // Compacts the file and drops a cut-short last line, so the next append starts on a line of its own.
      this.#journal.rewrite();
    }
    this.#metrics?.setBudgetSource(() => this.#budgets());
  }

  /** Buckets held in memory, across all series. */
  get bucketCount(): number {
    let count = 0;
    for (const series of this.#series.values()) count += series.minutes.size;
    return count;
  }

  /**
   * Records one request's tokens. Gemini tokens are billed now at Gemini's prices. Local tokens cost 0
   * here, because replica time pays for them (see `accrueReplicaTime`), but they still get the
   * gemini-equivalent and join the attribution window of their pool.
   */
  record(usage: UsageRecord): RecordedSpend {
    checkInstant(usage.at);
    const tokens = { prompt: usage.promptTokens, cachedPrompt: usage.cachedPromptTokens, completion: usage.completionTokens };
    const geminiEquivalentNanoUsd = geminiCostNanoUsd(tokens, this.#prices);
    const spendNanoUsd = usage.backend === "gemini" ? geminiEquivalentNanoUsd : 0;
    const entry: UsageEntry = {
      type: "usage",
      minute: minuteOf(usage.at),
      tenant: usage.tenant,
      pool: usage.pool,
      backend: usage.backend,
      quant: usage.backend === "gemini" ? null : usage.quant,
      requests: 1,
      promptTokens: usage.promptTokens,
      cachedPromptTokens: usage.cachedPromptTokens,
      completionTokens: usage.completionTokens,
      spendNanoUsd,
      geminiEquivalentNanoUsd,
    };
    this.#commit(entry);

    const spend = { spendUsd: usdFromNano(spendNanoUsd), geminiEquivalentUsd: usdFromNano(geminiEquivalentNanoUsd) };
    if (this.#metrics !== undefined) {
      this.#metrics.countTokens(usage.pool, usage.backend, entry.quant, usage.promptTokens, usage.completionTokens);
      if (spendNanoUsd > 0) this.#metrics.spend.inc({ pool: usage.pool, backend: usage.backend, tenant: usage.tenant }, spend.spendUsd);
      this.#metrics.geminiEquivalent.inc({ pool: usage.pool }, spend.geminiEquivalentUsd);
    }
    return spend;
  }

  /**
   * Bills `replicaSeconds` of the pool's live replicas at its `costPerReplicaHourUsd`. The gateway
   * calls it about once a second with the replica-seconds since its previous call.
   *
   * Attribution rule: the cost is split over the tenants in proportion to the local tokens (prompt
   * plus completion) each used in this pool since the previous accrual. That span is the
   * attribution window, and each share lands in the tenant's local bucket of the minute of `at`.
   * When no local tokens were used in the window, the whole cost goes to the tenant `idle`, so spend
   * per tenant always sums to the total. Shares are whole nano-USD that sum to the cost exactly.
   */
  accrueReplicaTime(pool: string, replicaSeconds: number, at: number = this.#now()): void {
    checkInstant(at);
    const poolConfig = this.#pools.find((candidate) => candidate.name === pool);
    if (poolConfig === undefined) throw new RangeError(`Pool '${pool}' not found in the config: replica time can only be billed to a configured pool.`);
    if (!Number.isFinite(replicaSeconds) || replicaSeconds < 0) {
      throw new RangeError(`Invalid replica time ${replicaSeconds} for pool '${pool}': expected a number of seconds of at least 0.`);
    }

    const exactCost = replicaCostNanoUsd(replicaSeconds, poolConfig.costPerReplicaHourUsd) + (this.#carryNanoUsd.get(pool) ?? 0);
    // The 1e-6 absorbs float error, so a cost that is a whole amount is not floored to one less.
    const cost = Math.floor(exactCost + 1e-6);
    this.#carryNanoUsd.set(pool, exactCost - cost);

    const shares = this.#window.sharesOf(pool);
    if (shares.length === 0 && cost === 0) return;
    const attributed = shares.length === 0 ? [{ tenant: idleTenant, quant: null, tokens: 1 }] : shares;
    const parts = splitProportionally(cost, attributed.map((share) => share.tokens));
    const entry: AccrualEntry = {
      type: "accrual",
      minute: minuteOf(at),
      pool,
      shares: attributed.map((share, index) => ({ tenant: share.tenant, quant: share.quant, spendNanoUsd: parts[index] ?? 0 })),
    };
    this.#commit(entry);

    for (const share of entry.shares) {
      if (share.spendNanoUsd > 0) this.#metrics?.spend.inc({ pool, backend: "local", tenant: share.tenant }, usdFromNano(share.spendNanoUsd));
    }
  }

  /** Returns the tenant's spend in the UTC calendar day or month that contains `at`, Gemini and local together. */
  spentUsd(tenant: string, period: BudgetPeriod, at: number = this.#now()): number {
    const days = this.#dailySpend.get(tenant);
    if (days === undefined) return 0;
    const { firstDay, endDay } = periodDays(period, at);
    let total = 0;
    for (const [day, nanoUsd] of days) {
      if (day >= firstDay && day < endDay) total += nanoUsd;
    }
    return usdFromNano(total);
  }

  /**
   * Returns what the tenant may still spend: the smaller of its day and month remainders, negative
   * once overspent (requests in flight can overshoot), or null when the tenant has no budget.
   */
  budgetRemainingUsd(tenant: string, at: number = this.#now()): number | null {
    const config = this.#tenants.get(tenant);
    const remainders: number[] = [];
    if (config?.budgetUsdPerDay !== undefined) remainders.push(config.budgetUsdPerDay - this.spentUsd(tenant, "day", at));
    if (config?.budgetUsdPerMonth !== undefined) remainders.push(config.budgetUsdPerMonth - this.spentUsd(tenant, "month", at));
    return remainders.length === 0 ? null : Math.min(...remainders);
  }

  isOverBudget(tenant: string, at: number = this.#now()): boolean {
    const remaining = this.budgetRemainingUsd(tenant, at);
    return remaining !== null && remaining <= 0;
  }

  /**
   * Sums usage in [from, to) by tenant, pool or backend. Buckets are whole minutes, and a minute
   * counts when its start lies in the range. Local rows include the replica cost attributed in the
   * range. Rows come by spend, highest first. The total is summed in nano-USD before conversion.
   */
  summary(query: SummaryQuery): { rows: UsageRow[]; total: UsageRow } {
    const fromMinute = Math.ceil(query.from / millisecondsPerMinute);
    const toMinute = Math.ceil(query.to / millisecondsPerMinute);
    const groups = new Map<string, BucketValues>();
    for (const series of this.#series.values()) {
      const key = series[query.groupBy];
      let bucket = groups.get(key);
      if (bucket === undefined) {
        bucket = emptyBucket();
        groups.set(key, bucket);
      }
      series.minutes.sumInto(fromMinute, toMinute, bucket);
    }

    const total = emptyBucket();
    const rows: UsageRow[] = [];
    for (const [key, bucket] of groups) {
      if (isEmpty(bucket)) continue;
      addBucket(total, bucket);
      rows.push(toRow(key, bucket));
    }
    rows.sort((left, right) => right.spendUsd - left.spendUsd || left.key.localeCompare(right.key));
    return { rows, total: toRow("total", total) };
  }

  /** Applies a change in memory, then appends it to the journal before the caller returns. */
  #commit(entry: UsageEntry | AccrualEntry): void {
    this.#dropExpired();
    this.#apply(entry);
    this.#journal?.append(entry);
  }

  #apply(entry: JournalEntry): void {
    switch (entry.type) {
      case "usage":
      case "bucket": {
        const { type, minute, tenant, pool, backend, quant, ...values } = entry;
        this.#addToSeries({ tenant, pool, backend, quant }, minute, values);
        if (type === "usage" && backend === "local") this.#window.add(pool, tenant, quant, values.promptTokens + values.completionTokens);
        break;
      }
      case "accrual":
        for (const share of entry.shares) {
          const values = { ...emptyBucket(), spendNanoUsd: share.spendNanoUsd };
          this.#addToSeries({ tenant: share.tenant, pool: entry.pool, backend: "local", quant: share.quant }, entry.minute, values);
        }
        this.#window.clear(entry.pool);
        break;
      case "window":
        this.#window.add(entry.pool, entry.tenant, entry.quant, entry.tokens);
        break;
    }
  }

  #addToSeries(key: Omit<Series, "minutes">, minute: number, values: BucketValues): void {
    const id = JSON.stringify([key.tenant, key.pool, key.backend, key.quant]);
    let series = this.#series.get(id);
    if (series === undefined) {
      series = { ...key, minutes: new MinuteSeries() };
      this.#series.set(id, series);
    }
    series.minutes.add(minute, values);

    if (values.spendNanoUsd === 0) return;
    let days = this.#dailySpend.get(key.tenant);
    if (days === undefined) {
      days = new Map();
      this.#dailySpend.set(key.tenant, days);
    }
    const day = Math.floor((minute * millisecondsPerMinute) / millisecondsPerDay);
    days.set(day, (days.get(day) ?? 0) + values.spendNanoUsd);
  }

  /** Drops buckets and daily spend older than the retention, once per UTC day. */
  #dropExpired(): void {
    const firstDay = Math.floor(this.#now() / millisecondsPerDay) - retentionDays;
    if (firstDay <= this.#retainedFromDay) return;
    this.#retainedFromDay = firstDay;

    const firstMinute = (firstDay * millisecondsPerDay) / millisecondsPerMinute;
    for (const [id, series] of this.#series) {
      series.minutes.dropBefore(firstMinute);
      if (series.minutes.size === 0) this.#series.delete(id);
    }
    for (const [tenant, days] of this.#dailySpend) {
      for (const day of days.keys()) if (day < firstDay) days.delete(day);
      if (days.size === 0) this.#dailySpend.delete(tenant);
    }
  }

  *#snapshot(): IterableIterator<JournalEntry> {
    for (const { tenant, pool, backend, quant, minutes } of this.#series.values()) {
      for (const [minute, values] of minutes.entries()) yield { type: "bucket", minute, tenant, pool, backend, quant, ...values };
    }
    for (const [pool, share] of this.#window.entries()) yield { type: "window", pool, ...share };
  }

  #budgets(): { tenant: string; remainingUsd: number }[] {
    const at = this.#now();
    const budgets: { tenant: string; remainingUsd: number }[] = [];
    for (const tenant of this.#tenants.keys()) {
      const remainingUsd = this.budgetRemainingUsd(tenant, at);
      if (remainingUsd !== null) budgets.push({ tenant, remainingUsd });
    }
    return budgets;
  }
}

/** Returns the UTC days, as days since the Unix epoch, of the period that contains `at`: [firstDay, endDay). */
function periodDays(period: BudgetPeriod, at: number): { firstDay: number; endDay: number } {
  if (period === "day") {
    const day = Math.floor(at / millisecondsPerDay);
    return { firstDay: day, endDay: day + 1 };
  }
  const date = new Date(at);
  const monthStart = Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1);
  const nextMonthStart = Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
  return { firstDay: monthStart / millisecondsPerDay, endDay: nextMonthStart / millisecondsPerDay };
}

function toRow(key: string, bucket: BucketValues): UsageRow {
  const spendUsd = usdFromNano(bucket.spendNanoUsd);
  return {
    key,
    requests: bucket.requests,
    promptTokens: bucket.promptTokens,
    completionTokens: bucket.completionTokens,
    spendUsd,
    geminiEquivalentUsd: usdFromNano(bucket.geminiEquivalentNanoUsd),
    usdPerMillionTokens: usdPerMillionTokens(spendUsd, bucket.promptTokens + bucket.completionTokens),
  };
}

function isEmpty(bucket: BucketValues): boolean {
  return bucket.requests === 0 && bucket.spendNanoUsd === 0 && bucket.promptTokens === 0 && bucket.completionTokens === 0;
}

function checkInstant(at: number): void {
  if (!Number.isFinite(at)) throw new RangeError(`Invalid time ${at}: expected milliseconds since the Unix epoch.`);
}
