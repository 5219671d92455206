/**
 * A short, real Spillway run watched by a real Prometheus: `spillway up` with tiny models, a local
 * stand-in for Gemini and two tenants with budgets. A load from the official `openai` SDK makes every
 * dashboard panel show something: overflow of several reasons, ladder steps down and up, a failed
 * Gemini call. Used by test/dashboards.test.ts and scripts/render-dashboard-images.ts.
 *
 * Prometheus finds its targets in files: the gateway's address, and each worker's address with the
 * labels `pool` and `replica`, rewritten whenever `spillway up` logs a replica as ready or stopped.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";

import OpenAI, { APIError } from "openai";
import { stringify } from "yaml";

import { MockGemini } from "./mock-gemini.ts";
import { makeTinyModel } from "./models.ts";
import { startPrometheus, type RunningPrometheus } from "./prometheus.ts";
import { startSpillwayUp, type SpillwayUp, type WorkerEndpoint } from "./spillway-up.ts";

export const gatewayJob = "spillway-gateway";
export const workersJob = "spillway-workers";

const tenantKeys = { STUDIO_A_KEY: "key-studio-a", STUDIO_B_KEY: "key-studio-b" };

export interface ObservedRun {
  prometheus: RunningPrometheus;
  spillway: SpillwayUp;
  mock: MockGemini;
  startedAt: Date;
  stop(): Promise<void>;
}

/** How long the load phases last; the image script runs longer than the test. */
export interface LoadPlan {
  /** Parallel clients on pool npc in the busy phase; its two slots and queue of 4 cannot take them all. */
  busyClients: number;
  /** The busy phase lasts at least this long, and then until the npc replica is on its lowest rung. */
  busyMinSeconds: number;
  busyMaxSeconds: number;
  /** The calm phase lasts at least this long, and then until the npc replica has stepped up once. */
  calmMinSeconds: number;
  calmMaxSeconds: number;
}

export const testLoadPlan: LoadPlan = { busyClients: 8, busyMinSeconds: 6, busyMaxSeconds: 40, calmMinSeconds: 2, calmMaxSeconds: 30 };

export interface LoadReport {
  responses: { local: number; gemini: number };
  failures: string[];
}

function spillwayConfig(models: { f16: string; q8: string; q4: string; quest: string }, geminiBaseUrl: string): Record<string, unknown> {
  return {
    gateway: { host: "127.0.0.1", port: 0 },
    auth: {
      keys: [
        { name: "studio-a", keyEnv: "STUDIO_A_KEY", budgetUsdPerDay: 5 },
        { name: "studio-b", keyEnv: "STUDIO_B_KEY", budgetUsdPerDay: 2 },
      ],
    },
    pools: [
      {
        name: "npc",
        variants: [{ quant: "F16", model: models.f16 }, { quant: "Q8_0", model: models.q8 }, { quant: "Q4_0", model: models.q4 }],
        replicas: { min: 1, max: 1 },
        slotsPerReplica: 2,
        queueSize: 4,
        contextSize: 1024,
        threadsPerReplica: 1,
        slo: { timeToFirstTokenSeconds: 1 },
        costPerReplicaHourUsd: 0.45,
        // Timers of seconds instead of minutes, so a short run steps down and back up. The rungs of a
        // tiny model decode at about the same speed, so no minimum speed-up is required.
        autoscaling: {
          stepDownAfterSeconds: 1,
          stepUpAfterSeconds: 2,
          minDwellSeconds: 1,
          smoothingSeconds: 0.5,
          scaleUpAfterSeconds: 600,
          scaleDownAfterSeconds: 600,
          minStepSpeedup: 0,
        },
      },
      {
        // No replica until the first request, which overflows as cold_start.
        name: "quest",
        variants: [{ quant: "Q8_0", model: models.quest }],
        replicas: { min: 0, max: 1 },
        slotsPerReplica: 2,
        contextSize: 1024,
        threadsPerReplica: 1,
        costPerReplicaHourUsd: 0.2,
      },
    ],
    overflow: { enabled: true, gemini: { baseUrl: geminiBaseUrl, apiKeyEnv: "MOCK_GEMINI_KEY", maxAttempts: 2 } },
  };
}

function workerGroups(workers: WorkerEndpoint[]): Array<{ targets: string[]; labels: Record<string, string> }> {
  return workers.map((worker) => ({ targets: [new URL(worker.url).host], labels: { pool: worker.pool, replica: worker.replica } }));
}

/** Starts Prometheus, the Gemini stand-in and `spillway up`, and waits until Prometheus scrapes the gateway and the npc worker. */
export async function startObservedRun(): Promise<ObservedRun> {
  const directory = mkdtempSync(path.join(tmpdir(), "spillway-observed-"));
  // Replies never end early (eosWeight -100), so every local request decodes max_tokens.
  const shape = { layers: 4, embedding: 256, eosWeight: -100 };
  const models = {
    f16: await makeTinyModel("observed-f16.gguf", { ...shape, quant: "f16" }),
    q8: await makeTinyModel("observed-q8.gguf", { ...shape, quant: "q8_0" }),
    q4: await makeTinyModel("observed-q4.gguf", { ...shape, quant: "q4_0" }),
    quest: await makeTinyModel("observed-quest.gguf"),
  };
  const mock = await MockGemini.start({ latencyMs: 40, chunkIntervalMs: 5 });
  const prometheus = await startPrometheus([gatewayJob, workersJob]).catch(async (error: unknown) => {
    await mock.close();
    throw error;
  });
  const configFile = path.join(directory, "spillway.yaml");
  writeFileSync(configFile, stringify(spillwayConfig(models, mock.baseUrl)));

  let spillway: SpillwayUp | undefined;
  const stop = async () => {
    await spillway?.stop();
    await prometheus.stop();
    await mock.close();
    rmSync(directory, { recursive: true, force: true });
  };
  try {
    spillway = await startSpillwayUp({
      configFile,
      stateFile: path.join(directory, "state", "usage.jsonl"),
      env: { ...tenantKeys, MOCK_GEMINI_KEY: mock.apiKey, HF_ENDPOINT: "http://127.0.0.1:9" },
      onWorkersChange: (workers) => prometheus.setTargets(workersJob, workerGroups(workers)),
    });
    prometheus.setTargets(gatewayJob, [{ targets: [new URL(spillway.url).host], labels: {} }]);
    await prometheus.waitForTargets(gatewayJob, 1);
    await prometheus.waitForTargets(workersJob, 1, 60_000);
  } catch (error) {
    const logs = spillway?.recentLogs() ?? "";
    await stop();
    throw new Error(`the observed run did not start: ${String(error)}\n${logs}`, { cause: error });
  }
  return { prometheus, spillway, mock, startedAt: new Date(), stop };
}

/** Reads one sample of the gateway's own /metrics; 0 when the series does not exist yet. */
async function gatewaySample(run: ObservedRun, series: string): Promise<number> {
  const text = await (await fetch(`${run.spillway.url}/metrics`)).text();
  const line = text.split("\n").find((entry) => entry.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition: () => Promise<boolean>, minSeconds: number, maxSeconds: number, startedAt: number): Promise<boolean> {
  for (;;) {
    const elapsed = (Date.now() - startedAt) / 1000;
    if (elapsed >= minSeconds && (await condition())) return true;
    if (elapsed >= maxSeconds) return false;
    await delay(250);
  }
}

/**
 * Sends the run's load. First come a cold start and prompts too long for the context, one of which
 * Gemini fails. A busy phase on pool npc (streams and non-streams from both tenants) lasts until its
 * replica has stepped down the ladder, and a calm phase until it steps up again.
 */
export async function driveLoad(run: ObservedRun, plan: LoadPlan): Promise<LoadReport> {
  const report: LoadReport = { responses: { local: 0, gemini: 0 }, failures: [] };
  const clients = Object.values(tenantKeys).map((apiKey) => new OpenAI({ baseURL: `${run.spillway.url}/v1`, apiKey, maxRetries: 0, timeout: 60_000 }));
  const hello: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "Greet the traveller." }];

  const send = async (client: OpenAI, model: string, stream: boolean, messages = hello) => {
    try {
      if (stream) {
        const { data, response } = await client.chat.completions
          .create({ model, messages, max_tokens: 24, stream: true, stream_options: { include_usage: true } })
          .withResponse();
        for await (const _chunk of data) {
          // Read to the end, so the gateway meters the whole stream.
        }
        report.responses[response.headers.get("x-spillway-backend") === "gemini" ? "gemini" : "local"] += 1;
      } else {
        const { response } = await client.chat.completions.create({ model, messages, max_tokens: 24 }).withResponse();
        report.responses[response.headers.get("x-spillway-backend") === "gemini" ? "gemini" : "local"] += 1;
      }
    } catch (error) {
      report.failures.push(`${model}${stream ? " stream" : ""}: ${String(error)}`);
    }
  };
  const [studioA, studioB] = clients as [OpenAI, OpenAI];

  await send(studioA, "quest", false);
  // A prompt longer than the context overflows; Gemini fails both attempts, so the gateway counts an
  // upstream error and the client gets the 503.
  run.mock.enqueue({ kind: "503" }, { kind: "503" });
  const tooLong: OpenAI.Chat.Completions.ChatCompletionMessageParam[] = [{ role: "user", content: "lore ".repeat(3000) }];
  let outcome = "200";
  try {
    await studioB.chat.completions.create({ model: "npc", messages: tooLong, max_tokens: 8 });
  } catch (error) {
    outcome = error instanceof APIError ? String(error.status as number | undefined) : String(error);
  }
  if (outcome !== "503") report.failures.push(`npc with a too long prompt: expected 503 from the failing Gemini, got ${outcome}`);
  await send(studioB, "npc", false, tooLong);

  let phase: "busy" | "calm" | "done" = "busy";
  const loop = async (index: number) => {
    for (let count = 0; phase !== "done"; count += 1) {
      if (phase === "calm" && index > 0) {
        await delay(200);
        continue;
      }
      await send(index % 2 === 0 ? studioA : studioB, index === plan.busyClients ? "quest" : "npc", (count + index) % 2 === 0);
      if (phase === "calm") await delay(300);
    }
  };
  // One more client keeps pool quest busy, so its replica serves local requests too.
  const loops = Array.from({ length: plan.busyClients + 1 }, (_, index) => loop(index));

  const busyStart = Date.now();
  await until(async () => (await gatewaySample(run, 'spillway_ladder_steps_total{pool="npc",direction="down"}')) >= 2, plan.busyMinSeconds, plan.busyMaxSeconds, busyStart);
  phase = "calm";
  const calmStart = Date.now();
  await until(async () => (await gatewaySample(run, 'spillway_ladder_steps_total{pool="npc",direction="up"}')) >= 1, plan.calmMinSeconds, plan.calmMaxSeconds, calmStart);
  phase = "done";
  await Promise.all(loops);
  return report;
}
