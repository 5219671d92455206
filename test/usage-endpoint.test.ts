import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";

import express, { type ErrorRequestHandler } from "express";

import { ApiError, type ApiErrorBody } from "../api/errors.ts";
import { UsageError } from "../cli/options.ts";
import { runCostCommand } from "../cli/commands/cost.ts";
import { configSchema } from "../controller/config/schema.ts";
import { Ledger } from "../controller/metering/ledger.ts";
import type { UsageRecord } from "../controller/metering/types.ts";
import { createUsageHandler, parseTimestamp, type UsageResponse } from "../controller/metering/usage-endpoint.ts";

const execFileAsync = promisify(execFile);
const now = Date.parse("2026-03-10T12:00:00Z");
const startOfDay = Date.parse("2026-03-10T00:00:00Z");

function usage(fields: Partial<UsageRecord>): UsageRecord {
  return {
    at: now - 60_000,
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

function makeLedger(): Ledger {
  const config = configSchema.parse({
    pools: [{ name: "npc", variants: [{ quant: "Q4_K_M", model: "npc.gguf" }], costPerReplicaHourUsd: 3.6 }],
  });
  const ledger = new Ledger({ config, now: () => now });
  // 3 USD of Gemini output for studio-a, and 1 USD of replica time for studio-b's local tokens.
  ledger.record(usage({ tenant: "studio-a", backend: "gemini", quant: null, promptTokens: 1000, completionTokens: 1_000_000 }));
  ledger.record(usage({ tenant: "studio-b", promptTokens: 200_000, completionTokens: 100_000 }));
  ledger.accrueReplicaTime("npc", 1000, now - 60_000);
  // Yesterday, outside the default range.
  ledger.record(usage({ at: startOfDay - 60_000, tenant: "studio-c", backend: "gemini", quant: null, completionTokens: 1000 }));
  return ledger;
}

const errorBoundary: ErrorRequestHandler = (error, _request, response, next) => {
  if (!(error instanceof ApiError)) {
    next(error);
    return;
  }
  response.status(error.status).json(error.toBody());
};

let baseUrl = "";
let closeServer: () => Promise<void> = () => Promise.resolve();

before(async () => {
  const app = express();
  app.get("/v1/spillway/usage", createUsageHandler({ ledger: makeLedger(), now: () => now }));
  app.use(errorBoundary);
  const server = await new Promise<ReturnType<typeof app.listen>>((resolve) => {
    const listening = app.listen(0, "127.0.0.1", () => resolve(listening));
  });
  baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  closeServer = () => new Promise((resolve) => server.close(() => resolve()));
});
after(() => closeServer());

async function getUsage(query: string): Promise<{ status: number; body: unknown }> {
  const response = await fetch(`${baseUrl}/v1/spillway/usage${query}`);
  return { status: response.status, body: await response.json() };
}

describe("usage endpoint", () => {
  test("default range is today", async () => {
    const { status, body } = await getUsage("");
    const usageBody = body as UsageResponse;
    assert.equal(status, 200);
    assert.equal(usageBody.object, "spillway.usage");
    assert.equal(usageBody.from, "2026-03-10T00:00:00.000Z");
    assert.equal(usageBody.to, "2026-03-10T12:00:00.000Z");
    assert.equal(usageBody.group_by, "tenant");
    assert.deepEqual(
      usageBody.data.map((row) => row.key),
      ["studio-a", "studio-b"],
    );
    assert.equal(usageBody.total.requests, 2);
    assert.equal(usageBody.total.spendUsd, 4.0005);
  });

  test("group_by pool and backend", async () => {
    const byPool = (await getUsage("?group_by=pool")).body as UsageResponse;
    assert.deepEqual(
      byPool.data.map((row) => row.key),
      ["npc"],
    );
    const byBackend = (await getUsage("?group_by=backend")).body as UsageResponse;
    const local = byBackend.data.find((row) => row.key === "local");
    assert.equal(local?.spendUsd, 1);
    assert.equal(local?.usdPerMillionTokens, (1 * 1e6) / 300_000);
  });

  test("unix seconds and ISO ranges", async () => {
    const from = (startOfDay - 86_400_000) / 1000;
    const bySeconds = (await getUsage(`?from=${from}&to=${startOfDay / 1000}`)).body as UsageResponse;
    assert.deepEqual(
      bySeconds.data.map((row) => row.key),
      ["studio-c"],
    );
    const byIso = (await getUsage("?from=2026-03-09&to=2026-03-10T00:00:00%2B00:00")).body as UsageResponse;
    assert.equal(byIso.from, "2026-03-09T00:00:00.000Z");
    assert.deepEqual(byIso.data, bySeconds.data);
  });

  const invalid: [string, string][] = [
    ["?group_by=model", "group_by"],
    ["?from=yesterday", "from"],
    ["?from=2026-02-30", "from"],
    ["?to=2026-03-10T25:00:00Z", "to"],
    ["?from=1&from=2", "from"],
    ["?from=2026-03-11", "to"],
  ];
  for (const [query, param] of invalid) {
    test(`rejects ${query}`, async () => {
      const { status, body } = await getUsage(query);
      assert.equal(status, 400);
      assert.equal((body as ApiErrorBody).error.param, param);
      assert.equal((body as ApiErrorBody).error.type, "invalid_request_error");
    });
  }

  test("timestamps without offset are UTC", () => {
    assert.equal(parseTimestamp("2026-03-10T12:00"), now);
    assert.equal(parseTimestamp("2026-03-10T13:00:00+01:00"), now);
    assert.equal(parseTimestamp("1773144000"), now);
    assert.equal(parseTimestamp("2026-03-10T12:00:00.5Z"), now + 500);
  });
});

/** Runs `spillway cost` in a child process, the way the dispatcher would call it. */
async function runCost(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = 'const { runCostCommand } = await import("./cli/commands/cost.ts"); await runCostCommand(process.argv.slice(1));';
  try {
    const { stdout, stderr } = await execFileAsync(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script, "--", ...args], {
      env: { ...process.env, SPILLWAY_ADMIN_KEY: "" },
    });
    return { code: 0, stdout, stderr };
  } catch (error) {
    const failed = error as { code: number; stdout: string; stderr: string };
    return { code: failed.code, stdout: failed.stdout, stderr: failed.stderr };
  }
}

describe("spillway cost", () => {
  test("prints a row per tenant", async () => {
    const { code, stdout } = await runCost(["--url", baseUrl]);
    assert.equal(code, 0);
    const lines = stdout.split("\n");
    assert.match(lines[0] ?? "", /^Usage from 2026-03-10T00:00:00.000Z to 2026-03-10T12:00:00.000Z, by tenant$/);
    assert.match(lines[2] ?? "", /^TENANT +REQUESTS +PROMPT TOKENS +COMPLETION TOKENS +SPEND USD +USD PER 1M TOKENS +GEMINI-EQUIVALENT USD +SAVED USD$/);
    const rows = lines.slice(3, 5).map((line) => line.split(/ {2,}/));
    assert.deepEqual(rows[0], ["studio-a", "1", "1,000", "1,000,000", "3.000500", "2.9975", "3.000500", "0.000000"]);
    assert.deepEqual(rows[1], ["studio-b", "1", "200,000", "100,000", "1.000000", "3.3333", "0.400000", "-0.600000"]);
    assert.match(lines[5] ?? "", /^-+( +-+){7}$/);
    assert.deepEqual(lines[6]?.split(/ {2,}/), ["TOTAL", "2", "201,000", "1,100,000", "4.000500", "3.0749", "3.400500", "-0.600000"]);
  });

  test("columns are aligned", async () => {
    const { stdout } = await runCost(["--url", baseUrl, "--group-by", "backend"]);
    const table = stdout.split("\n").slice(2, 7);
    const widths = new Set(table.map((line) => line.length));
    assert.equal(widths.size, 1, table.join("\n"));
  });

  test("passes the range", async () => {
    const { stdout } = await runCost(["--url", baseUrl, "--from", "2026-03-09", "--to", "2026-03-10"]);
    assert.match(stdout, /^studio-c +1 +0 +1,000 +0\.003000 /m);
    assert.doesNotMatch(stdout, /studio-a/);
  });

  test("unreachable gateway exits 1", async () => {
    const closed = express().listen(0, "127.0.0.1");
    await new Promise((resolve) => closed.once("listening", resolve));
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((resolve) => closed.close(resolve));

    const { code, stderr } = await runCost(["--url", url]);
    assert.equal(code, 1);
    assert.ok(stderr.includes(`cannot reach the gateway at ${url}`), stderr);
    assert.ok(stderr.includes("spillway up"), stderr);
  });

  test("gateway error is printed", async () => {
    const { code, stderr } = await runCost(["--url", baseUrl, "--to", "2026-03-01"]);
    assert.equal(code, 1);
    assert.match(stderr, /returned HTTP 400: Invalid 'to'/);
  });

  test("bad group-by is a usage error", async () => {
    await assert.rejects(runCostCommand(["--group-by", "model"]), UsageError);
  });

  test("bad from is a usage error", async () => {
    await assert.rejects(runCostCommand(["--from", "last week"]), UsageError);
  });

  test("unknown option is a usage error", async () => {
    await assert.rejects(runCostCommand(["--format", "json"]), UsageError);
  });
});
