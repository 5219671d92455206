import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import OpenAI from "openai";
import { pino } from "pino";

import { configSchema, type SpillwayConfig } from "../../controller/config/schema.ts";
import { startController, type RunningController } from "../../controller/controller.ts";

export interface TestGateway {
  controller: RunningController;
  url: string;
  config: SpillwayConfig;
  /** An SDK client with retries off, so every status reaches the test. */
  client(apiKey?: string): OpenAI;
  stop(): Promise<void>;
}

/**
 * Starts the real controller on 127.0.0.1 (port 0) with real worker child processes. `rawConfig` is
 * parsed by the same schema as spillway.yaml; every pool gets one thread per replica, because
 * node-llama-cpp's default thread count is pathological on small machines.
 */
export async function startTestGateway(
  rawConfig: Record<string, unknown>,
  env: NodeJS.ProcessEnv = {},
  options: { controlIntervalSeconds?: number } = {},
): Promise<TestGateway> {
  const pools = (rawConfig.pools as Array<Record<string, unknown>>).map((pool) => ({ threadsPerReplica: 1, contextSize: 1024, ...pool }));
  const config = configSchema.parse({ ...rawConfig, gateway: { host: "127.0.0.1", port: 0 }, pools });
  const directory = mkdtempSync(path.join(tmpdir(), "spillway-gateway-"));
  const logger = pino({ level: process.env.SPILLWAY_TEST_LOG_LEVEL ?? "silent" });
  const controller = await startController({
    config,
    logger,
    statePath: path.join(directory, "usage.jsonl"),
    env: { ...process.env, ...env },
    runtime: { gpu: false, drainSeconds: 2 },
    drainSeconds: 2,
    plannerStatePath: path.join(directory, "planner.json"),
    ...options,
  });
  return {
    controller,
    url: controller.url,
    config,
    client: (apiKey = "unused") => new OpenAI({ baseURL: `${controller.url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 }),
    stop: () => controller.stop(),
  };
}

/** Waits until a pool has `count` ready replicas. */
export async function waitForReady(gateway: TestGateway, pool: string, count = 1, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ready = gateway.controller.table.forPool(pool).filter((replica) => replica.state === "ready");
    if (ready.length >= count) return;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  throw new Error(`pool ${pool} did not get ${count} ready replicas within ${timeoutMs} ms`);
}

/** Reads the gateway's usage summary, grouped as asked. */
export async function usageSummary(gateway: TestGateway, groupBy: "tenant" | "pool" | "backend", adminKey?: string): Promise<{
  data: Array<{ key: string; requests: number; promptTokens: number; completionTokens: number; spendUsd: number; geminiEquivalentUsd: number }>;
}> {
  const response = await fetch(`${gateway.url}/v1/spillway/usage?group_by=${groupBy}`, {
    headers: adminKey === undefined ? {} : { authorization: `Bearer ${adminKey}` },
  });
  if (!response.ok) throw new Error(`usage endpoint returned ${response.status}: ${await response.text()}`);
  return (await response.json()) as Awaited<ReturnType<typeof usageSummary>>;
}

/** Reads one sample of a metric from the gateway's /metrics text; 0 when the series does not exist. */
export async function metricSample(gateway: TestGateway, series: string): Promise<number> {
  const text = await (await fetch(`${gateway.url}/metrics`)).text();
  const line = text.split("\n").find((entry) => entry.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}
