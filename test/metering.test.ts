import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { after, describe, test } from "node:test";

import { pino } from "pino";

import { configSchema, type SpillwayConfig } from "../controller/config/schema.ts";
import { splitProportionally } from "../controller/metering/attribution.ts";
import { Ledger, idleTenant, type LedgerOptions } from "../controller/metering/ledger.ts";
import { defaultGeminiPrices, geminiCostUsd, geminiPricesFrom } from "../controller/metering/prices.ts";
import type { UsageRecord, UsageRow } from "../controller/metering/types.ts";
import { GatewayMetrics, quantBits } from "../controller/metrics.ts";

const minute = 60_000;
const march10 = Date.parse("2026-03-10T12:00:00Z");

/** 3.6 USD per replica hour is 0.001 USD per replica-second, which keeps expected values readable. */
function makeConfig(overrides: Record<string, unknown> = {}): SpillwayConfig {
  return configSchema.parse({
    pools: [
      { name: "npc", variants: [{ quant: "Q4_K_M", model: "npc.gguf" }], costPerReplicaHourUsd: 3.6 },
      { name: "quest", variants: [{ quant: "Q8_0", model: "quest.gguf" }], costPerReplicaHourUsd: 7.2 },
    ],
    auth: {
      keys: [
        { name: "studio-a", keyEnv: "KEY_A", budgetUsdPerDay: 5, budgetUsdPerMonth: 8 },
        { name: "studio-b", keyEnv: "KEY_B", budgetUsdPerDay: 1 },
        { name: "studio-c", keyEnv: "KEY_C" },
      ],
    },
    ...overrides,
  });
}

function usage(fields: Partial<UsageRecord>): UsageRecord {
  return {
    at: march10,
    requestId: "request-1",
    tenant: "studio-a",
    pool: "npc",
    backend: "local",
    quant: "Q4_K_M",
    promptTokens: 0,
    cachedPromptTokens: 0,
    completionTokens: 0,
    outcome: "ok",
    ...fields,
  };
}

/** Creates a clock that the test sets by hand. */
function manualClock(start: number): { now: () => number; set: (at: number) => void } {
  let current = start;
  return { now: () => current, set: (at) => (current = at) };
}

function rowsByKey(rows: UsageRow[]): Map<string, UsageRow> {
  return new Map(rows.map((row) => [row.key, row]));
}

function assertUsd(actual: number | undefined, expected: number, message?: string): void {
  assert.notEqual(actual, undefined, message ?? "expected a value");
  assert.ok(Math.abs((actual ?? Number.NaN) - expected) < 1e-12, message ?? `expected ${expected} USD, got ${actual}`);
}

const directory = mkdtempSync(path.join(tmpdir(), "spillway-ledger-"));
after(() => rmSync(directory, { recursive: true, force: true }));
let stateFiles = 0;
function newStatePath(): string {
  stateFiles += 1;
  return path.join(directory, `ledger-${stateFiles}.jsonl`);
}

/** Creates a pino logger whose lines the test can read. */
function captureLogger(): { logger: LedgerOptions["logger"] & object; lines: () => { level: number; msg: string }[] } {
  const output: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      output.push(chunk.toString());
      callback();
    },
  });
  const logger = pino({ level: "info" }, stream);
  return { logger, lines: () => output.map((line) => JSON.parse(line) as { level: number; msg: string }) };
}

describe("gemini prices", () => {
  test("token mix at default prices", () => {
    const cost = geminiCostUsd({ prompt: 1000, cachedPrompt: 400, completion: 200 }, defaultGeminiPrices);
    // 600 uncached at 0.50, 400 cached at 0.05 and 200 output at 3.00 USD per 1M tokens.
    assert.equal(cost, 0.00092);
  });

  test("million tokens of each kind", () => {
    assert.equal(geminiCostUsd({ prompt: 1_000_000, cachedPrompt: 0, completion: 0 }, defaultGeminiPrices), 0.5);
    assert.equal(geminiCostUsd({ prompt: 1_000_000, cachedPrompt: 1_000_000, completion: 0 }, defaultGeminiPrices), 0.05);
    assert.equal(geminiCostUsd({ prompt: 0, cachedPrompt: 0, completion: 1_000_000 }, defaultGeminiPrices), 3);
  });

  test("configured prices replace defaults", () => {
    const config = makeConfig({ overflow: { gemini: { pricesUsdPerMillion: { input: 1, cachedInput: 0.1, output: 4 } } } });
    const prices = geminiPricesFrom(config);
    assert.equal(geminiCostUsd({ prompt: 1000, cachedPrompt: 400, completion: 200 }, prices), 0.00144);
  });

  test("defaults without gemini config", () => {
    assert.deepEqual(geminiPricesFrom(makeConfig()), { input: 0.5, cachedInput: 0.05, output: 3 });
  });

  test("rejects more cached than prompt tokens", () => {
    assert.throws(() => geminiCostUsd({ prompt: 10, cachedPrompt: 11, completion: 0 }, defaultGeminiPrices), RangeError);
  });

  test("rejects fractional token counts", () => {
    assert.throws(() => geminiCostUsd({ prompt: 1.5, cachedPrompt: 0, completion: 0 }, defaultGeminiPrices), RangeError);
  });
});

describe("ledger record", () => {
  test("gemini usage is billed now", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    const spend = ledger.record(usage({ backend: "gemini", quant: null, promptTokens: 1000, cachedPromptTokens: 400, completionTokens: 200 }));
    assert.equal(spend.spendUsd, 0.00092);
    assert.equal(spend.geminiEquivalentUsd, 0.00092);
    assert.equal(ledger.spentUsd("studio-a", "day"), 0.00092);
  });

  test("local usage costs 0 with an equivalent", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    const spend = ledger.record(usage({ promptTokens: 1000, cachedPromptTokens: 400, completionTokens: 200 }));
    assert.equal(spend.spendUsd, 0);
    assert.equal(spend.geminiEquivalentUsd, 0.00092);
    assert.equal(ledger.spentUsd("studio-a", "day"), 0);
  });

  test("many records in one minute share a bucket", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    for (let index = 0; index < 5000; index += 1) {
      ledger.record(usage({ at: march10 + (index % 60_000), promptTokens: 10, completionTokens: 5 }));
    }
    assert.equal(ledger.bucketCount, 1);
    const { total } = ledger.summary({ from: march10, to: march10 + minute, groupBy: "tenant" });
    assert.equal(total.requests, 5000);
    assert.equal(total.promptTokens, 50_000);
  });

  test("buckets older than 35 days are dropped", () => {
    const clock = manualClock(march10);
    const ledger = new Ledger({ config: makeConfig(), now: clock.now });
    const day = 86_400_000;
    for (let index = 0; index < 50; index += 1) {
      clock.set(march10 + index * day);
      ledger.record(usage({ at: clock.now(), backend: "gemini", quant: null, completionTokens: 1000 }));
    }
    // Today and the 35 UTC days before it.
    assert.equal(ledger.bucketCount, 36);
    const expired = ledger.summary({ from: march10, to: march10 + 10 * day, groupBy: "tenant" });
    assert.equal(expired.rows.length, 0);
  });
});

describe("replica time attribution", () => {
  test("split by local token share", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-a", promptTokens: 200, completionTokens: 100 }));
    ledger.record(usage({ tenant: "studio-b", promptTokens: 50, completionTokens: 50 }));
    ledger.accrueReplicaTime("npc", 1);

    assert.equal(ledger.spentUsd("studio-a", "day"), 0.00075);
    assert.equal(ledger.spentUsd("studio-b", "day"), 0.00025);
    assert.equal(ledger.spentUsd(idleTenant, "day"), 0);
  });

  test("window without tokens goes to idle", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-a", completionTokens: 100 }));
    ledger.accrueReplicaTime("npc", 1);
    ledger.accrueReplicaTime("npc", 2);

    assert.equal(ledger.spentUsd("studio-a", "day"), 0.001);
    assert.equal(ledger.spentUsd(idleTenant, "day"), 0.002);
  });

  test("tenant spend sums to replica cost", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    const seconds = [0.7, 1.3, 0.9, 1.1, 1];
    seconds.forEach((replicaSeconds, index) => {
      if (index % 2 === 0) ledger.record(usage({ tenant: "studio-a", completionTokens: 7 }));
      ledger.record(usage({ tenant: "studio-b", completionTokens: 3 }));
      ledger.accrueReplicaTime("npc", replicaSeconds);
    });
    ledger.accrueReplicaTime("npc", 3);

    const { rows, total } = ledger.summary({ from: march10 - minute, to: march10 + minute, groupBy: "tenant" });
    assert.equal(total.spendUsd, 0.008);
    assertUsd(
      rows.reduce((sum, row) => sum + row.spendUsd, 0),
      0.008,
    );
  });

  test("pools are attributed separately", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-a", pool: "npc", completionTokens: 10 }));
    ledger.record(usage({ tenant: "studio-b", pool: "quest", quant: "Q8_0", completionTokens: 10 }));
    ledger.accrueReplicaTime("quest", 1);

    assert.equal(ledger.spentUsd("studio-b", "day"), 0.002);
    assert.equal(ledger.spentUsd("studio-a", "day"), 0);
  });

  test("gemini tokens do not join the window", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-b", backend: "gemini", quant: null, completionTokens: 1000 }));
    ledger.accrueReplicaTime("npc", 1);

    assert.equal(ledger.spentUsd(idleTenant, "day"), 0.001);
  });

  test("unknown pool is rejected", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    assert.throws(() => ledger.accrueReplicaTime("missing", 1), /Pool 'missing' not found/);
  });

  test("negative replica time is rejected", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    assert.throws(() => ledger.accrueReplicaTime("npc", -1), RangeError);
  });

  test("split keeps the exact total", () => {
    const parts = splitProportionally(10, [1, 1, 1]);
    assert.equal(parts.reduce((sum, part) => sum + part, 0), 10);
    assert.ok(parts.every((part) => part === 3 || part === 4));
  });
});

describe("budgets", () => {
  const day = 86_400_000;
  const lastSecondOfMarch = Date.parse("2026-03-31T23:59:59Z");
  const firstOfApril = Date.parse("2026-04-01T00:00:00Z");
  /** 1M completion tokens cost 3 USD at the default output price. */
  const threeUsd = { backend: "gemini" as const, quant: null, completionTokens: 1_000_000 };

  test("day resets at UTC midnight", () => {
    const clock = manualClock(Date.parse("2026-03-10T23:59:00Z"));
    const ledger = new Ledger({ config: makeConfig(), now: clock.now });
    ledger.record(usage({ at: clock.now(), ...threeUsd }));

    assert.equal(ledger.spentUsd("studio-a", "day"), 3);
    assert.equal(ledger.budgetRemainingUsd("studio-a"), 2);
    clock.set(Date.parse("2026-03-11T00:00:00Z"));
    assert.equal(ledger.spentUsd("studio-a", "day"), 0);
    assert.equal(ledger.spentUsd("studio-a", "month"), 3);
  });

  test("month resets at UTC month start", () => {
    const clock = manualClock(lastSecondOfMarch);
    const ledger = new Ledger({ config: makeConfig(), now: clock.now });
    ledger.record(usage({ at: lastSecondOfMarch - day, ...threeUsd }));
    ledger.record(usage({ at: lastSecondOfMarch, ...threeUsd }));

    assert.equal(ledger.spentUsd("studio-a", "month"), 6);
    clock.set(firstOfApril);
    assert.equal(ledger.spentUsd("studio-a", "month"), 0);
    assert.equal(ledger.spentUsd("studio-a", "month", lastSecondOfMarch), 6);
  });

  test("tightest period sets remaining", () => {
    const clock = manualClock(lastSecondOfMarch - day);
    const ledger = new Ledger({ config: makeConfig(), now: clock.now });
    ledger.record(usage({ at: clock.now(), ...threeUsd }));
    ledger.record(usage({ at: clock.now(), ...threeUsd }));
    assert.equal(ledger.budgetRemainingUsd("studio-a"), -1);
    assert.equal(ledger.isOverBudget("studio-a"), true);

    clock.set(lastSecondOfMarch);
    // The day budget (5) is fresh, but the month budget (8) has 2 left.
    assert.equal(ledger.budgetRemainingUsd("studio-a"), 2);
    assert.equal(ledger.isOverBudget("studio-a"), false);
    ledger.record(usage({ at: clock.now(), ...threeUsd }));
    assert.equal(ledger.isOverBudget("studio-a"), true);

    clock.set(firstOfApril);
    assert.equal(ledger.budgetRemainingUsd("studio-a"), 5);
    assert.equal(ledger.isOverBudget("studio-a"), false);
  });

  test("local replica cost counts", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-b", completionTokens: 10 }));
    ledger.accrueReplicaTime("npc", 1000);

    assert.equal(ledger.spentUsd("studio-b", "day"), 1);
    assert.equal(ledger.budgetRemainingUsd("studio-b"), 0);
    assert.equal(ledger.isOverBudget("studio-b"), true);
  });

  test("no budget returns null", () => {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-c", ...threeUsd }));
    assert.equal(ledger.budgetRemainingUsd("studio-c"), null);
    assert.equal(ledger.isOverBudget("studio-c"), false);
    assert.equal(ledger.budgetRemainingUsd("unknown"), null);
  });
});

describe("ledger summary", () => {
  function populatedLedger(): Ledger {
    const ledger = new Ledger({ config: makeConfig(), now: () => march10 });
    ledger.record(usage({ tenant: "studio-a", backend: "gemini", quant: null, promptTokens: 1000, cachedPromptTokens: 400, completionTokens: 200 }));
    ledger.record(usage({ tenant: "studio-a", promptTokens: 300, completionTokens: 100 }));
    ledger.record(usage({ tenant: "studio-b", promptTokens: 50, completionTokens: 50 }));
    ledger.accrueReplicaTime("npc", 1);
    ledger.accrueReplicaTime("npc", 1);
    ledger.record(usage({ tenant: "studio-b", pool: "quest", quant: "Q8_0", promptTokens: 500, completionTokens: 500 }));
    ledger.accrueReplicaTime("quest", 1);
    // Outside the range below.
    ledger.record(usage({ at: march10 - 2 * minute, tenant: "studio-c", backend: "gemini", quant: null, completionTokens: 1000 }));
    return ledger;
  }
  const range = { from: march10 - minute, to: march10 + minute };

  test("by tenant", () => {
    const { rows, total } = populatedLedger().summary({ ...range, groupBy: "tenant" });
    const byTenant = rowsByKey(rows);
    assert.deepEqual([...byTenant.keys()].sort(), [idleTenant, "studio-a", "studio-b"]);
    assert.equal(byTenant.get("studio-a")?.requests, 2);
    assertUsd(byTenant.get("studio-a")?.spendUsd, 0.00092 + 0.0008);
    assertUsd(byTenant.get("studio-b")?.spendUsd, 0.0002 + 0.002);
    assertUsd(byTenant.get(idleTenant)?.spendUsd, 0.001);
    assert.equal(byTenant.get(idleTenant)?.requests, 0);
    assert.equal(byTenant.get(idleTenant)?.usdPerMillionTokens, null);
    assert.equal(total.requests, 4);
  });

  test("by pool", () => {
    const { rows } = populatedLedger().summary({ ...range, groupBy: "pool" });
    const byPool = rowsByKey(rows);
    assertUsd(byPool.get("npc")?.spendUsd, 0.00092 + 0.002);
    assertUsd(byPool.get("quest")?.spendUsd, 0.002);
    assert.equal(byPool.get("quest")?.usdPerMillionTokens, 2);
  });

  test("by backend", () => {
    const { rows } = populatedLedger().summary({ ...range, groupBy: "backend" });
    const byBackend = rowsByKey(rows);
    const gemini = byBackend.get("gemini");
    assert.equal(gemini?.spendUsd, 0.00092);
    assert.equal(gemini?.geminiEquivalentUsd, 0.00092);
    assertUsd(gemini?.usdPerMillionTokens ?? undefined, (0.00092 * 1e6) / 1200);
    const local = byBackend.get("local");
    assertUsd(local?.spendUsd, 0.004);
    // 300 + 100 and 50 + 50 prompt and completion tokens, then 500 + 500, all uncached.
    assertUsd(local?.geminiEquivalentUsd, (850 * 0.5 + 650 * 3) / 1e6);
  });

  test("totals equal the sum of rows", () => {
    const ledger = populatedLedger();
    for (const groupBy of ["tenant", "pool", "backend"] as const) {
      const { rows, total } = ledger.summary({ ...range, groupBy });
      const sum = (field: "requests" | "promptTokens" | "completionTokens" | "spendUsd" | "geminiEquivalentUsd") =>
        rows.reduce((accumulated, row) => accumulated + row[field], 0);
      assert.equal(total.requests, sum("requests"), `requests by ${groupBy}`);
      assert.equal(total.promptTokens, sum("promptTokens"), `prompt tokens by ${groupBy}`);
      assert.equal(total.completionTokens, sum("completionTokens"), `completion tokens by ${groupBy}`);
      assertUsd(total.spendUsd, sum("spendUsd"), `spend by ${groupBy}`);
      assertUsd(total.geminiEquivalentUsd, sum("geminiEquivalentUsd"), `gemini-equivalent by ${groupBy}`);
    }
  });

  test("usd per 1M tokens of the total", () => {
    const { total } = populatedLedger().summary({ ...range, groupBy: "tenant" });
    const tokens = total.promptTokens + total.completionTokens;
    assert.equal(tokens, 2700);
    assertUsd(total.usdPerMillionTokens ?? undefined, (total.spendUsd * 1e6) / tokens);
  });

  test("rows sorted by spend", () => {
    const { rows } = populatedLedger().summary({ ...range, groupBy: "tenant" });
    assert.deepEqual(
      rows.map((row) => row.key),
      ["studio-b", "studio-a", idleTenant],
    );
  });

  test("range excludes other minutes", () => {
    const ledger = populatedLedger();
    const before = ledger.summary({ from: march10 - 3 * minute, to: march10 - minute, groupBy: "tenant" });
    assert.deepEqual(
      before.rows.map((row) => row.key),
      ["studio-c"],
    );
    assert.equal(before.total.spendUsd, 0.003);
  });
});

describe("ledger persistence", () => {
  function fill(ledger: Ledger): void {
    ledger.record(usage({ tenant: "studio-a", backend: "gemini", quant: null, promptTokens: 1000, cachedPromptTokens: 400, completionTokens: 200 }));
    ledger.record(usage({ tenant: "studio-b", promptTokens: 100, completionTokens: 100 }));
    ledger.accrueReplicaTime("npc", 2);
    ledger.accrueReplicaTime("npc", 1);
  }
  const range = { from: march10 - minute, to: march10 + minute, groupBy: "tenant" as const };

  test("restart keeps spend", () => {
    const statePath = newStatePath();
    const first = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    fill(first);
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath });

    assert.deepEqual(restarted.summary(range), first.summary(range));
    assert.equal(restarted.spentUsd("studio-a", "day"), 0.00092);
    assert.equal(restarted.spentUsd("studio-b", "day"), 0.002);
  });

  test("second restart counts once", () => {
    const statePath = newStatePath();
    fill(new Ledger({ config: makeConfig(), now: () => march10, statePath }));
    const second = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    second.record(usage({ tenant: "studio-a", backend: "gemini", quant: null, completionTokens: 1000 }));
    const third = new Ledger({ config: makeConfig(), now: () => march10, statePath });

    assertUsd(third.spentUsd("studio-a", "day"), 0.00092 + 0.003);
    assert.equal(third.spentUsd("studio-b", "day"), 0.002);
    assert.equal(third.summary(range).total.requests, 3);
  });

  test("window survives restart", () => {
    const statePath = newStatePath();
    new Ledger({ config: makeConfig(), now: () => march10, statePath }).record(usage({ tenant: "studio-b", completionTokens: 10 }));
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    restarted.accrueReplicaTime("npc", 1);

    assert.equal(restarted.spentUsd("studio-b", "day"), 0.001);
    assert.equal(restarted.spentUsd(idleTenant, "day"), 0);
  });

  test("accrued window stays empty", () => {
    const statePath = newStatePath();
    const first = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    first.record(usage({ tenant: "studio-b", completionTokens: 10 }));
    first.accrueReplicaTime("npc", 1);
    // The second start replays appended lines and writes a snapshot; the third replays the snapshot.
    const second = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    assert.equal(second.spentUsd("studio-b", "day"), 0.001);
    const third = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    third.accrueReplicaTime("npc", 1);

    assert.equal(third.spentUsd("studio-b", "day"), 0.001);
    assert.equal(third.spentUsd(idleTenant, "day"), 0.001);
  });

  test("truncated last line is skipped", () => {
    const statePath = newStatePath();
    const first = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    fill(first);
    appendFileSync(statePath, '{"type":"usage","minute":29');
    const capture = captureLogger();
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath, logger: capture.logger });

    assert.deepEqual(restarted.summary(range), first.summary(range));
    const warnings = capture.lines().filter((line) => line.level === 40);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0]?.msg ?? "", /incomplete last line/);
  });

  test("appends after truncation stay readable", () => {
    const statePath = newStatePath();
    fill(new Ledger({ config: makeConfig(), now: () => march10, statePath }));
    appendFileSync(statePath, '{"type":"usage","minute":29');
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath, logger: captureLogger().logger });
    restarted.record(usage({ tenant: "studio-c", backend: "gemini", quant: null, completionTokens: 1000 }));
    const capture = captureLogger();
    const third = new Ledger({ config: makeConfig(), now: () => march10, statePath, logger: capture.logger });

    assert.equal(third.spentUsd("studio-c", "day"), 0.003);
    assert.equal(third.spentUsd("studio-a", "day"), 0.00092);
    assert.equal(capture.lines().length, 0);
  });

  test("cut-short change is lost alone", () => {
    const statePath = newStatePath();
    const first = new Ledger({ config: makeConfig(), now: () => march10, statePath });
    first.record(usage({ tenant: "studio-c", backend: "gemini", quant: null, completionTokens: 1000 }));
    first.record(usage({ tenant: "studio-c", backend: "gemini", quant: null, completionTokens: 2000 }));
    const text = readFileSync(statePath, "utf8");
    writeFileSync(statePath, text.slice(0, -10));
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath, logger: captureLogger().logger });

    assert.equal(restarted.spentUsd("studio-c", "day"), 0.003);
  });

  test("invalid middle line is skipped", () => {
    const statePath = newStatePath();
    fill(new Ledger({ config: makeConfig(), now: () => march10, statePath }));
    appendFileSync(statePath, '{"type":"usage","minute":"soon"}\n');
    const capture = captureLogger();
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath, logger: capture.logger });

    assert.equal(restarted.spentUsd("studio-a", "day"), 0.00092);
    assert.match(capture.lines()[0]?.msg ?? "", /invalid lines/);
  });

  test("missing folder is created", () => {
    const statePath = path.join(directory, "nested", "state", "ledger.jsonl");
    new Ledger({ config: makeConfig(), now: () => march10, statePath }).record(usage({ tenant: "studio-c", backend: "gemini", quant: null, completionTokens: 1000 }));
    const restarted = new Ledger({ config: makeConfig(), now: () => march10, statePath });

    assert.equal(restarted.spentUsd("studio-c", "day"), 0.003);
  });

  test("expired buckets leave the file", () => {
    const statePath = newStatePath();
    fill(new Ledger({ config: makeConfig(), now: () => march10, statePath }));
    const later = march10 + 40 * 86_400_000;
    const restarted = new Ledger({ config: makeConfig(), now: () => later, statePath });

    assert.equal(restarted.bucketCount, 0);
    assert.equal(readFileSync(statePath, "utf8"), "");
  });
});

describe("gateway metrics", () => {
  test("ledger updates metric series", async () => {
    const metrics = new GatewayMetrics();
    const ledger = new Ledger({ config: makeConfig(), metrics, now: () => march10 });
    ledger.record(usage({ tenant: "studio-a", backend: "gemini", quant: null, promptTokens: 1000, cachedPromptTokens: 400, completionTokens: 200 }));
    ledger.record(usage({ tenant: "studio-b", promptTokens: 30, completionTokens: 10 }));
    ledger.accrueReplicaTime("npc", 1);
    const text = await metrics.registry.metrics();

    assert.match(text, /^spillway_tokens_total\{pool="npc",backend="gemini",quant="none",kind="prompt"\} 1000$/m);
    assert.match(text, /^spillway_tokens_total\{pool="npc",backend="local",quant="Q4_K_M",kind="completion"\} 10$/m);
    assert.match(text, /^spillway_spend_usd_total\{pool="npc",backend="gemini",tenant="studio-a"\} 0\.00092$/m);
    assert.match(text, /^spillway_spend_usd_total\{pool="npc",backend="local",tenant="studio-b"\} 0\.001$/m);
    assert.match(text, /^spillway_gemini_equivalent_usd_total\{pool="npc"\} /m);
    assert.match(text, /^spillway_budget_remaining_usd\{tenant="studio-a"\} 4\.99908$/m);
    assert.match(text, /^spillway_budget_remaining_usd\{tenant="studio-b"\} 0\.999$/m);
    assert.doesNotMatch(text, /tenant="studio-c"/);
    assert.doesNotMatch(text, /request-1/);
  });

  test("contract metric names are registered", async () => {
    const metrics = new GatewayMetrics();
    metrics.addPool("npc");
    metrics.requests.inc({ pool: "npc", backend: "local", code: "200" });
    metrics.timeToFirstToken.observe({ pool: "npc", backend: "local" }, 0.3);
    metrics.requestDuration.observe({ pool: "npc", backend: "local" }, 1.2);
    metrics.queueWait.observe({ pool: "npc" }, 0.02);
    metrics.setReplicaQuant("npc", "npc-0", "Q4_K_M");
    metrics.upstreamErrors.inc({ backend: "gemini", code: "429" });
    metrics.circuitOpen.set({ backend: "gemini" }, 1);
    const text = await metrics.registry.metrics();

    const expected = [
      'spillway_requests_total{pool="npc",backend="local",code="200"} 1',
      'spillway_overflow_total{pool="npc",reason="context_length"} 0',
      'spillway_time_to_first_token_seconds_bucket{le="0.5",pool="npc",backend="local"} 1',
      'spillway_request_duration_seconds_count{pool="npc",backend="local"} 1',
      'spillway_queue_wait_seconds_sum{pool="npc"} 0.02',
      'spillway_queue_depth{pool="npc"} 0',
      'spillway_pool_replicas{pool="npc",state="draining"} 0',
      'spillway_replica_quant_bits{pool="npc",replica="npc-0"} 4',
      'spillway_ladder_steps_total{pool="npc",direction="down"} 0',
      'spillway_upstream_errors_total{backend="gemini",code="429"} 1',
      'spillway_circuit_open{backend="gemini"} 1',
    ];
    for (const line of expected) assert.ok(text.split("\n").includes(line), `missing: ${line}`);
    assert.match(text, /^process_cpu_user_seconds_total /m);
  });

  test("removePool deletes its series", async () => {
    const metrics = new GatewayMetrics();
    metrics.addPool("npc");
    metrics.addPool("quest");
    metrics.timeToFirstToken.observe({ pool: "npc", backend: "local" }, 0.3);
    metrics.setReplicaQuant("npc", "npc-0", "Q4_K_M");
    await metrics.removePool("npc");
    const text = await metrics.registry.metrics();

    assert.doesNotMatch(text, /pool="npc"/);
    assert.match(text, /pool="quest"/);
  });

  test("quant bits", () => {
    const cases: [string, number][] = [
      ["F32", 32],
      ["F16", 16],
      ["BF16", 16],
      ["Q8_0", 8],
      ["Q6_K", 6],
      ["Q5_K_M", 5],
      ["Q5_0", 5],
      ["Q4_K_M", 4],
      ["IQ4_XS", 4],
      ["Q3_K_S", 3],
      ["IQ3_XXS", 3],
      ["Q2_K", 2],
      ["IQ2_M", 2],
      ["IQ1_S", 1],
      ["q4_k_m", 4],
      ["Q7_0", 0],
      ["GPTQ", 0],
      ["", 0],
    ];
    for (const [quant, bits] of cases) assert.equal(quantBits(quant), bits, quant);
  });
});
