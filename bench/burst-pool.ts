import { createWriteStream } from "node:fs";
import path from "node:path";

import { pino, type Logger } from "pino";

import { configSchema } from "../controller/config/schema.ts";
import { startController, type RunningController } from "../controller/controller.ts";
import { writeTinyModel, type TinyModelQuant } from "../worker/tiny-model/index.ts";

export const poolName = "burst";
const geminiKeyVariable = "BURST_GEMINI_KEY";

/** One rung of the ladder: the quant name the pool uses and the GGUF file that contains it. */
export interface Rung {
  quant: string;
  model: string;
}

/** The levers of the pool that a scenario may use. */
export interface Scenario {
  label: string;
  ladder: boolean;
  maxReplicas: number;
  overflow: boolean;
}

export const scenarios: readonly Scenario[] = [
  { label: "(a) replicas only", ladder: false, maxReplicas: 2, overflow: false },
  { label: "(b) replicas + ladder", ladder: true, maxReplicas: 2, overflow: false },
  { label: "(c) replicas + ladder + overflow", ladder: true, maxReplicas: 2, overflow: true },
  { label: "(d) overflow only", ladder: false, maxReplicas: 1, overflow: true },
];

/**
 * The pool's shape, the same in every scenario. The queue is larger than the number of requests a full
 * profile sends, so without overflow a request fails only after the gateway's queue timeout.
 */
export const poolShape = {
  slotsPerReplica: 2,
  threadsPerReplica: 1,
  contextSize: 1024,
  queueSize: 4096,
  costPerReplicaHourUsd: 0.1,
};

/**
 * The control loop's timers, scaled down from the defaults (5 s, 60 s, 10 s, 60 s, 20 s, 10 s) so each
 * lever acts within one step of the rate profile.
 */
export const benchAutoscaling = {
  scaleUpAfterSeconds: 2,
  scaleDownAfterSeconds: 20,
  stepDownAfterSeconds: 2,
  stepUpAfterSeconds: 10,
  minDwellSeconds: 3,
  smoothingSeconds: 2,
};
export const controlIntervalSeconds = 0.5;

/** Four layers of width 256, with the end-of-reply token unreachable so every reply runs to max_tokens. */
const modelShape = { layers: 4, embedding: 256, seed: 1, eosWeight: -100 };

/** Writes the three rungs of the tiny model into `directory`, highest quality first. */
export async function writeLadder(directory: string): Promise<Rung[]> {
  const quants: Array<[TinyModelQuant, string]> = [["f16", "F16"], ["q8_0", "Q8_0"], ["q4_0", "Q4_0"]];
  const rungs: Rung[] = [];
  for (const [fileQuant, quant] of quants) {
    const model = path.join(directory, `burst-${fileQuant}.gguf`);
    await writeTinyModel({ ...modelShape, quant: fileQuant, outPath: model });
    rungs.push({ quant, model });
  }
  return rungs;
}

export interface PoolSetup {
  rungs: readonly Rung[];
  maxReplicas: number;
  sloSeconds: number;
  /** Base URL and key of the overflow endpoint. Overflow is off when unset. */
  gemini?: { baseUrl: string; apiKey: string };
}

export interface BenchController {
  controller: RunningController;
  url: string;
  stop(): Promise<void>;
}

/** Starts the real controller on 127.0.0.1 with one pool. Its workers run as child processes. */
export async function startPool(directory: string, setup: PoolSetup, logFile: string | undefined): Promise<BenchController> {
  const config = configSchema.parse({
    gateway: { host: "127.0.0.1", port: 0 },
    pools: [
      {
        name: poolName,
        variants: setup.rungs,
        replicas: { min: 1, max: setup.maxReplicas },
        ...poolShape,
        slo: { timeToFirstTokenSeconds: setup.sloSeconds },
        autoscaling: benchAutoscaling,
      },
    ],
    overflow: setup.gemini === undefined
      ? { enabled: false }
      : { enabled: true, gemini: { baseUrl: setup.gemini.baseUrl, apiKeyEnv: geminiKeyVariable } },
  });
  const { logger, close } = createLogger(logFile);
  const controller = await startController({
    config,
    logger,
    statePath: path.join(directory, `usage-${Date.now()}.jsonl`),
    env: { ...process.env, ...(setup.gemini === undefined ? {} : { [geminiKeyVariable]: setup.gemini.apiKey }) },
    runtime: { gpu: false, drainSeconds: 2 },
    drainSeconds: 2,
    controlIntervalSeconds,
  });
  let stopping: Promise<void> | undefined;
  return {
    controller,
    url: controller.url,
    stop: () => {
      stopping ??= controller.stop().finally(close);
      return stopping;
    },
  };
}

function createLogger(logFile: string | undefined): { logger: Logger; close: () => Promise<void> } {
  if (logFile === undefined) return { logger: pino({ level: "silent" }), close: () => Promise.resolve() };
  const stream = createWriteStream(logFile, { flags: "a" });
  return {
    logger: pino({ level: "info" }, stream),
    close: () => new Promise((resolve) => stream.end(resolve)),
  };
}

/** Waits until the pool has a ready replica. */
export async function waitForReady(controller: RunningController, timeoutMilliseconds = 60_000): Promise<void> {
  const deadline = performance.now() + timeoutMilliseconds;
  while (performance.now() < deadline) {
    if (controller.table.forPool(poolName).some((replica) => replica.state === "ready")) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`the ${poolName} pool had no ready replica within ${timeoutMilliseconds / 1000} s`);
}

/** A sampler of the pool's replicas during a run: the max ready at once and the lowest rung any replica served from. */
export class ReplicaWatch {
  maxReady = 0;
  lowestRung = 0;
  readonly #timer: NodeJS.Timeout;

  constructor(controller: RunningController) {
    this.#timer = setInterval(() => {
      const ready = controller.table.forPool(poolName).filter((replica) => replica.state === "ready");
      this.maxReady = Math.max(this.maxReady, ready.length);
      for (const replica of ready) this.lowestRung = Math.max(this.lowestRung, replica.rung);
    }, 100);
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}

export interface PoolAccounts {
  localSpendUsd: number;
  geminiSpendUsd: number;
  stepsDown: number;
  stepsUp: number;
}

/** Reads spend per backend from the ledger and ladder steps from the gateway's /metrics. */
export async function readAccounts(bench: BenchController): Promise<PoolAccounts> {
  const { rows } = bench.controller.ledger.summary({ from: 0, to: Date.now() + 60_000, groupBy: "backend" });
  const spendOf = (backend: string) => rows.find((row) => row.key === backend)?.spendUsd ?? 0;
  const metrics = await (await fetch(`${bench.url}/metrics`)).text();
  return {
    localSpendUsd: spendOf("local"),
    geminiSpendUsd: spendOf("gemini"),
    stepsDown: metricSample(metrics, `spillway_ladder_steps_total{pool="${poolName}",direction="down"}`),
    stepsUp: metricSample(metrics, `spillway_ladder_steps_total{pool="${poolName}",direction="up"}`),
  };
}

function metricSample(text: string, series: string): number {
  const line = text.split("\n").find((entry) => entry.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}
