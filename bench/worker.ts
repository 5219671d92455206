/**
 * `npm run bench:worker`: decode speed and time to first token of node-llama-cpp in-process, the Spillway
 * worker over HTTP, and llama-server, all on one generated model with the same thread count.
 */
import { existsSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";

import { writeTinyModel } from "../worker/tiny-model/index.ts";
import { chatRequestBody, longStringSchema, sendStreamingChat, type ChatRequestOptions } from "./worker-requests.ts";
import { describeEnvironment, formatLoadAverage } from "./environment.ts";
import { InProcessEngine } from "./worker-in-process.ts";
import { runInTurns, sendBatch, summarize, type Batch, type ScenarioSummary, type SendRequest } from "./load.ts";
import { parseBenchOptions, type BenchOptions } from "./worker-options.ts";
import { renderReport, type Ratio, type ScenarioRow } from "./worker-report.ts";
import { startLlamaServer, startSpillwayWorker, type RunningServer, type ServerOptions } from "./worker-servers.ts";

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

interface Measurements {
  rows: ScenarioRow[];
  ratios: Ratio[];
  notes: string[];
}

async function main(): Promise<void> {
  const options = parseBenchOptions(process.argv.slice(2));
  if (options === undefined) return;
  const llamaServer = existsSync(options.llamaServer) ? options.llamaServer : undefined;
  if (llamaServer === undefined && options.llamaServerRequired) throw new Error(`--llama-server ${options.llamaServer} does not exist.`);

  const cleanup = new Cleanup();
  const stopOnSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping the servers`);
    void cleanup.run().finally(() => process.exit(signal === "SIGINT" ? 130 : 143));
  };
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);
  try {
    const directory = await mkdtemp(path.join(tmpdir(), "spillway-bench-"));
    cleanup.add(() => rm(directory, { recursive: true, force: true }));
    const modelPath = path.join(directory, "bench.gguf");
    await writeTinyModel({
      outPath: modelPath, quant: "q8_0", layers: options.layers, embedding: options.embedding, seed: 1, eosWeight: -100,
      contextLength: options.contextSize,
    });

    const loadBefore = formatLoadAverage();
    const started = performance.now();
    const measurements = await measure(options, modelPath, llamaServer, cleanup);
    const environment = await describeEnvironment(llamaServer);
    environment["Load average (1, 5, 15 min) before / after"] = `${loadBefore} / ${formatLoadAverage()}`;
    environment.Model = `generated llama, q8_0, ${options.layers} layers × ${options.embedding} embedding, replies never end before max_tokens`;
    environment.Settings = `${options.threads} threads everywhere, ${options.concurrency} slots, ${options.contextSize} tokens of context per slot, max_tokens ${options.maxTokens}, temperature 0`;
    environment.Duration = `${((performance.now() - started) / 1000).toFixed(0)} s`;

    const markdown = renderReport({ environment, command: commandLine(), ...measurements });
    process.stdout.write(`\n${markdown}`);
    if (options.out !== undefined) {
      await writeFile(options.out, markdown);
      console.error(`wrote ${options.out}`);
    }
  } finally {
    await cleanup.run();
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
  }
}

interface Summaries {
  inProcess: ScenarioSummary;
  freeText: ScenarioSummary;
  jsonSchema: ScenarioSummary;
  workerConcurrent: ScenarioSummary;
  serverSingle: ScenarioSummary | undefined;
  serverConcurrent: ScenarioSummary | undefined;
}

/**
 * Starts both servers up front so every comparison can take turns request by request (concurrency 1) or
 * batch by batch (high concurrency). Only one target decodes at any time.
 */
async function measure(options: BenchOptions, modelPath: string, llamaServer: string | undefined, cleanup: Cleanup): Promise<Measurements> {
  const serverOptions: ServerOptions = {
    modelPath, threads: options.threads, slots: options.concurrency, contextSize: options.contextSize,
  };
  const worker = await startServer("Spillway worker", () => startSpillwayWorker(serverOptions), cleanup);
  const server = llamaServer === undefined
    ? undefined
    : await startServer("llama-server", () => startLlamaServer(llamaServer, serverOptions), cleanup);

  const single = await measureSingleStream(options, modelPath, worker, server);
  const concurrent = await measureConcurrent(options, worker, server);
  await worker.stop();
  await server?.stop();

  const summaries: Summaries = {
    inProcess: summarize(single.inProcess, 1),
    freeText: summarize(single.freeText, 1),
    jsonSchema: summarize(single.jsonSchema, 1),
    workerConcurrent: summarize(concurrent.worker, options.concurrency),
    serverSingle: single.server === undefined ? undefined : summarize(single.server, 1),
    serverConcurrent: concurrent.server === undefined ? undefined : summarize(concurrent.server, options.concurrency),
  };
  const rows = scenarioRows(summaries);
  const notes = checkTokenCounts(rows, options.maxTokens);
  if (llamaServer === undefined) {
    notes.unshift(`llama-server was not run: ${options.llamaServer} does not exist. Build it with scripts/build-llama-server.sh.`);
  }
  return { rows, ratios: targetRatios(summaries, options.concurrency), notes };
}

function scenarioRows(summaries: Summaries): ScenarioRow[] {
  const rows: ScenarioRow[] = [
    { label: "node-llama-cpp in-process", summary: summaries.inProcess },
    { label: "worker, free text", summary: summaries.freeText },
    { label: "worker, json_schema", summary: summaries.jsonSchema },
  ];
  if (summaries.serverSingle !== undefined) rows.push({ label: "llama-server", summary: summaries.serverSingle });
  rows.push({ label: "worker, free text", summary: summaries.workerConcurrent });
  if (summaries.serverConcurrent !== undefined) rows.push({ label: "llama-server", summary: summaries.serverConcurrent });
  return rows;
}

async function startServer(name: string, start: () => Promise<RunningServer>, cleanup: Cleanup): Promise<RunningServer> {
  console.error(`starting ${name}`);
  const server = await start();
  let stopped: Promise<void> | undefined;
  const stop = () => (stopped ??= server.stop());
  cleanup.add(stop);
  console.error(`${name} listening on ${server.url}`);
  return { ...server, stop };
}

interface SingleStreamRuns {
  inProcess: Batch[];
  freeText: Batch[];
  jsonSchema: Batch[];
  server: Batch[] | undefined;
}

/** Concurrency 1: node-llama-cpp in-process, worker free text, worker json_schema and llama-server in turns. */
async function measureSingleStream(
  options: BenchOptions,
  modelPath: string,
  worker: RunningServer,
  server: RunningServer | undefined,
): Promise<SingleStreamRuns> {
  const inProcess = await InProcessEngine.load({
    modelPath, threads: options.threads, sequences: options.concurrency, contextSize: options.contextSize, maxTokens: options.maxTokens,
  });
  try {
    const targets: SendRequest[] = [
      (requestId) => inProcess.send(requestId),
      chatSender(worker, options.maxTokens, undefined),
      chatSender(worker, options.maxTokens, longStringSchema(options.maxTokens)),
      ...(server === undefined ? [] : [chatSender(server, options.maxTokens, undefined)]),
    ];
    console.error("warming up at concurrency 1");
    for (const send of targets) await send("warm-up");
    console.error(`measuring at concurrency 1: ${options.requests} requests per scenario`);
    const [inProcessRun, freeText, jsonSchema, serverRun] = await runInTurns("c1", targets, options.requests, 1);
    if (inProcessRun === undefined || freeText === undefined || jsonSchema === undefined) throw new Error("a scenario did not run");
    return { inProcess: inProcessRun, freeText, jsonSchema, server: serverRun };
  } finally {
    await inProcess.dispose();
  }
}

/**
 * High concurrency: the worker and llama-server take turns, one batch of `concurrency` simultaneous
 * requests each, for as many batches as it takes to reach `--requests`.
 */
async function measureConcurrent(
  options: BenchOptions,
  worker: RunningServer,
  server: RunningServer | undefined,
): Promise<{ worker: Batch[]; server: Batch[] | undefined }> {
  const targets = [worker, ...(server === undefined ? [] : [server])].map((target) => chatSender(target, options.maxTokens, undefined));
  const { concurrency } = options;
  console.error(`warming up at concurrency ${concurrency}`);
  for (const send of targets) await sendBatch((index) => send(`warm-up ${index}`), concurrency);
  const rounds = Math.ceil(options.requests / concurrency);
  console.error(`measuring at concurrency ${concurrency}: ${rounds * concurrency} requests per scenario`);
  const [workerRun, serverRun] = await runInTurns(`c${concurrency}`, targets, rounds, concurrency);
  if (workerRun === undefined) throw new Error("the worker scenario did not run");
  return { worker: workerRun, server: serverRun };
}

function chatSender(server: RunningServer, maxTokens: number, schema: Record<string, unknown> | undefined): SendRequest {
  const options: ChatRequestOptions = { model: server.model, maxTokens, schema };
  return (requestId) => sendStreamingChat(server.url, chatRequestBody(options, requestId));
}

function targetRatios(summaries: Summaries, concurrency: number): Ratio[] {
  return [
    {
      label: "worker c1 / in-process c1, decode tok/s",
      numerator: summaries.freeText.decodeTokensPerSecond,
      denominator: summaries.inProcess.decodeTokensPerSecond,
      target: "≥ 0.95",
      met: (value) => value >= 0.95,
    },
    {
      label: `worker c${concurrency} / llama-server c${concurrency}, aggregate tok/s`,
      numerator: summaries.workerConcurrent.aggregateTokensPerSecond,
      denominator: summaries.serverConcurrent?.aggregateTokensPerSecond ?? Number.NaN,
      target: "≥ 1.0",
      met: (value) => value >= 1,
    },
    {
      label: "worker json_schema / free text c1, decode tok/s",
      numerator: summaries.jsonSchema.decodeTokensPerSecond,
      denominator: summaries.freeText.decodeTokensPerSecond,
      target: "0.90 to 1.10",
      met: (value) => value >= 0.9 && value <= 1.1,
    },
  ];
}

/** Returns a note for each scenario whose replies did not all decode max_tokens, because its rates are not comparable. */
function checkTokenCounts(rows: ScenarioRow[], maxTokens: number): string[] {
  return rows
    .filter((row) => row.summary.completionTokens !== maxTokens)
    .map(
      (row) =>
        `${row.label} at concurrency ${row.summary.concurrency} decoded ${row.summary.completionTokens.toFixed(1)} ` +
        `tokens per reply on average, not max_tokens (${maxTokens}), so its rates are not comparable.`,
    );
}

function commandLine(): string {
  const args = process.argv.slice(2);
  return args.length === 0 ? "npm run bench:worker" : `npm run bench:worker -- ${args.join(" ")}`;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
