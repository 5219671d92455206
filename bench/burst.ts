/**
 * `npm run bench:burst`: what each lever of a pool buys under a burst. One pool of a tiny model runs on
 * the real controller with real worker processes. An open-loop request rate steps from 1x to 10x one
 * replica's capacity and back. Four scenarios run in turn: replicas only, replicas and the quantization
 * ladder, all three levers with overflow to a local mock of Gemini, and overflow alone.
 */
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import path from "node:path";

import { MockGemini } from "../test/support/mock-gemini.ts";
import { measureCapacity, runOpenLoop, type RateStep, type RequestTarget } from "./burst-load.ts";
import { parseBurstOptions, type BurstOptions } from "./burst-options.ts";
import {
  benchAutoscaling,
  controlIntervalSeconds,
  poolName,
  poolShape,
  readAccounts,
  ReplicaWatch,
  scenarios,
  startPool,
  waitForReady,
  writeLadder,
  type Rung,
  type Scenario,
} from "./burst-pool.ts";
import { checkTargets, renderBurstReport, type ScenarioResult } from "./burst-report.ts";
import { formatLoadAverage } from "./environment.ts";

/** Runs cleanup steps in reverse order of registration, even when one of them fails. */
class Cleanup {
  readonly #steps: (() => Promise<void>)[] = [];

  add(step: () => Promise<void>): void {
    this.#steps.push(step);
  }

  async run(): Promise<void> {
    for (const step of this.#steps.splice(0).reverse()) {
      await step().catch((error: unknown) => console.error("cleanup failed:", error));
    }
  }
}

/** Longer than the gateway's 60 s queue timeout, so a request that waits that long fails at the gateway, not here. */
const requestTimeoutMilliseconds = 120_000;
/** Words of every overflow reply, so a Gemini reply is billed as long as a local one. */
const geminiReplyWords = 256;

interface BenchContext {
  options: BurstOptions;
  directory: string;
  rungs: Rung[];
  cleanup: Cleanup;
}

async function main(): Promise<void> {
  const options = parseBurstOptions(process.argv.slice(2));
  if (options === undefined) return;
  const cleanup = new Cleanup();
  const stopOnSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping the controller and its workers`);
    void cleanup.run().finally(() => process.exit(130));
  };
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);
  try {
    const directory = await mkdtemp(path.join(tmpdir(), "spillway-bench-burst-"));
    cleanup.add(() => rm(directory, { recursive: true, force: true }));
    const context: BenchContext = { options, directory, rungs: await writeLadder(directory), cleanup };
    const loadBefore = formatLoadAverage();
    const capacities = await measureCapacities(context);
    const baseRate = capacities[0] ?? 0;
    const steps = options.multipliers.map((multiplier): RateStep => ({ requestsPerSecond: multiplier * baseRate, seconds: options.stepSeconds }));
    const results: ScenarioResult[] = [];
    for (const scenario of scenarios) results.push(await runScenario(context, scenario, steps));
    const markdown = renderBurstReport({
      environment: describeRun(context, capacities, `${loadBefore} / ${formatLoadAverage()}`),
      command: ["npm run bench:burst", ...(process.argv.length > 2 ? ["--", ...process.argv.slice(2)] : [])].join(" "),
      steps,
      multipliers: options.multipliers,
      sloSeconds: options.sloSeconds,
      results,
    });
    process.stdout.write(`\n${markdown}`);
    if (options.out !== undefined) {
      await writeFile(options.out, markdown);
      console.error(`wrote ${options.out}`);
    }
    if (checkTargets(results, options.sloSeconds).some((check) => !check.met)) console.error("Some targets were missed; see the report.");
  } finally {
    await cleanup.run();
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
  }
}

/** Requests per second one replica completes on each measured rung, top rung first. */
async function measureCapacities(context: BenchContext): Promise<number[]> {
  const { options } = context;
  const measured = options.measureEveryRung ? context.rungs : context.rungs.slice(0, 1);
  const capacities: number[] = [];
  for (const rung of measured) {
    console.error(`measuring the capacity of one ${rung.quant} replica for ${options.capacitySeconds} s`);
    const bench = await startPool(context.directory, { rungs: [rung], maxReplicas: 1, sloSeconds: options.sloSeconds }, options.log);
    context.cleanup.add(() => bench.stop());
    try {
      await waitForReady(bench.controller);
      const capacity = await measureCapacity(requestTarget(bench.url, options), poolShape.slotsPerReplica, options.capacitySeconds);
      console.error(`  ${capacity.toFixed(2)} requests/s`);
      capacities.push(capacity);
    } finally {
      await bench.stop();
    }
  }
  return capacities;
}

async function runScenario(context: BenchContext, scenario: Scenario, steps: readonly RateStep[]): Promise<ScenarioResult> {
  const { options, rungs } = context;
  const gemini = scenario.overflow ? await startGemini(context, steps) : undefined;
  const bench = await startPool(
    context.directory,
    {
      rungs: scenario.ladder ? rungs : rungs.slice(0, 1),
      maxReplicas: scenario.maxReplicas,
      sloSeconds: options.sloSeconds,
      ...(gemini === undefined ? {} : { gemini: { baseUrl: gemini.baseUrl, apiKey: gemini.apiKey } }),
    },
    options.log,
  );
  context.cleanup.add(() => bench.stop());
  try {
    await waitForReady(bench.controller);
    const watch = new ReplicaWatch(bench.controller);
    const started = performance.now();
    const outcomes = await runOpenLoop(requestTarget(bench.url, options), steps, (step) => {
      const rate = steps[step]?.requestsPerSecond ?? 0;
      console.error(`${scenario.label}: step ${step + 1} of ${steps.length}, ${rate.toFixed(1)} requests/s`);
    });
    const seconds = (performance.now() - started) / 1000;
    watch.stop();
    const accounts = await readAccounts(bench);
    const lowestQuant = rungs[watch.lowestRung]?.quant ?? `rung ${watch.lowestRung}`;
    return { scenario, outcomes, accounts, maxReplicas: watch.maxReady, lowestQuant, seconds };
  } finally {
    await bench.stop();
    await gemini?.close();
  }
}

/** Starts the mock Gemini with one long reply queued for every request the profile can send. */
async function startGemini(context: BenchContext, steps: readonly RateStep[]): Promise<MockGemini> {
  const gemini = await MockGemini.start({ latencyMs: context.options.geminiLatencyMilliseconds, chunkIntervalMs: 5 });
  context.cleanup.add(() => gemini.close());
  const requests = steps.reduce((sum, step) => sum + Math.ceil(step.requestsPerSecond * step.seconds), 0);
  const text = Array.from({ length: geminiReplyWords }, (_, index) => `word${index}`).join(" ");
  gemini.enqueue(...Array.from({ length: requests }, () => ({ kind: "text" as const, text })));
  return gemini;
}

function requestTarget(url: string, options: BurstOptions): RequestTarget {
  return { url, pool: poolName, maxTokens: options.maxTokens, timeoutMilliseconds: requestTimeoutMilliseconds };
}

function describeRun(context: BenchContext, capacities: readonly number[], loadAverages: string): Record<string, string> {
  const { options, rungs } = context;
  const capacityText = capacities.map((capacity, index) => `${rungs[index]?.quant ?? "?"} ${capacity.toFixed(2)}`).join(", ");
  const timers = Object.entries(benchAutoscaling).map(([name, value]) => `${name} ${value}`).join(", ");
  return {
    CPU: cpus()[0]?.model.trim() ?? "unknown",
    "CPU cores usable": String(availableParallelism()),
    Node: process.version,
    "Load average (1, 5, 15 min) before / after": loadAverages,
    Model: "tiny random llama, 4 layers x 256 wide, rungs F16, Q8_0, Q4_0; every reply decodes exactly max_tokens",
    Request: `streaming chat completion, one short user message, max_tokens ${options.maxTokens}`,
    Pool: `${poolShape.slotsPerReplica} slots and ${poolShape.threadsPerReplica} thread per replica, replicas min 1, ` +
      `queue ${poolShape.queueSize}, cost ${poolShape.costPerReplicaHourUsd} USD per replica-hour`,
    SLO: `time to first token ${options.sloSeconds} s`,
    "Autoscaling (s)": `${timers}; control loop every ${controlIntervalSeconds} s`,
    "Capacity of one replica (req/s, 2 clients)": capacityText,
    "Rate profile": `${options.multipliers.map((multiplier) => `${multiplier}x`).join(", ")} the F16 capacity, ${options.stepSeconds} s each, open loop`,
    Overflow: `local mock of Gemini, ${options.geminiLatencyMilliseconds} ms to first byte, ${geminiReplyWords}-word replies`,
  };
}

await main();
