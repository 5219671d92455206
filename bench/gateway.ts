/**
 * `npm run bench:gateway`: the latency the gateway adds over calling a worker directly. An instant fake
 * worker, the real controller in front of it and an open-loop load generator run as three processes.
 * Each rate is measured straight at the fake worker first, then through the gateway.
 */
import { closeSync, openSync, readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { availableParallelism, cpus, tmpdir } from "node:os";
import path from "node:path";

import { formatLoadAverage } from "./environment.ts";
import { cpuCost, readCpu } from "./gateway-cpu.ts";
import { parseGatewayBenchOptions, type GatewayBenchOptions } from "./gateway-options.ts";
import { BenchChild } from "./gateway-processes.ts";
import { benchApiKey, benchKeyVariable, benchPool, type LoadJob } from "./gateway-protocol.ts";
import { renderGatewayReport, targetsMet, type BenchPath, type RunSummary } from "./gateway-report.ts";

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

interface BenchProcesses {
  upstream: BenchChild;
  controller: BenchChild;
  load: BenchChild;
  /** File that receives the controller's log lines. */
  controllerLog: string;
}

/** Seconds a load job may take beyond its schedule before the benchmark gives up on it. */
const jobGraceSeconds = 30;
const requestTimeoutMilliseconds = 10_000;

async function main(): Promise<void> {
  const options = parseGatewayBenchOptions(process.argv.slice(2));
  if (options === undefined) return;
  const cleanup = new Cleanup();
  const stopOnSignal = (signal: NodeJS.Signals) => {
    console.error(`\n${signal}: stopping the child processes`);
    void cleanup.run().finally(() => process.exit(130));
  };
  process.once("SIGINT", stopOnSignal);
  process.once("SIGTERM", stopOnSignal);
  try {
    const directory = await mkdtemp(path.join(tmpdir(), "spillway-bench-gateway-"));
    cleanup.add(() => rm(directory, { recursive: true, force: true }));
    const processes = await startProcesses(directory, options, cleanup);
    await checkPaths(processes);

    const loadBefore = formatLoadAverage();
    const started = performance.now();
    const runs = await measureAll(processes, options);
    const loadAfter = formatLoadAverage();
    await processes.controller.stop();
    const markdown = renderGatewayReport({
      environment: describeRun(options, `${loadBefore} / ${loadAfter}`, (performance.now() - started) / 1000),
      command: commandLine(),
      runs,
      notes: runNotes(options, processes.controllerLog),
    });
    process.stdout.write(`\n${markdown}`);
    if (options.out !== undefined) {
      await writeFile(options.out, markdown);
      console.error(`wrote ${options.out}`);
    }
    if (!targetsMet(runs)) console.error("The gateway missed its latency targets or failed requests; see the report.");
    if (runs.some((run) => run.result.errors + run.result.timeouts > 0)) process.exitCode = 1;
  } finally {
    await cleanup.run();
    process.off("SIGINT", stopOnSignal);
    process.off("SIGTERM", stopOnSignal);
  }
}

async function startProcesses(directory: string, options: GatewayBenchOptions, cleanup: Cleanup): Promise<BenchProcesses> {
  const upstream = await startChild("upstream", { script: "gateway-upstream.ts" }, cleanup);
  if (upstream.url === undefined) throw new Error("the upstream did not report its URL");

  const controllerLog = path.join(directory, "controller.log");
  const logDescriptor = openSync(controllerLog, "w");
  const profile = options.profileDirectory;
  try {
    const controller = await startChild("controller", {
      script: "gateway-controller.ts",
      args: ["--upstream", upstream.url, "--state-file", path.join(directory, "usage.jsonl")],
      nodeOptions: profile === undefined ? [] : ["--cpu-prof", "--cpu-prof-dir", path.resolve(profile)],
      env: { ...process.env, [benchKeyVariable]: benchApiKey },
      stdout: logDescriptor,
    }, cleanup);
    const load = await startChild("load generator", { script: "gateway-load.ts" }, cleanup);
    return { upstream, controller, load, controllerLog };
  } finally {
    // The child has its own copy of the descriptor, so this one can close.
    closeSync(logDescriptor);
  }
}

async function startChild(name: string, options: Parameters<typeof BenchChild.start>[1], cleanup: Cleanup): Promise<BenchChild> {
  console.error(`starting the ${name}`);
  const child = await BenchChild.start(name, options);
  cleanup.add(() => child.stop());
  return child;
}

/** Sends one request on each path before any load, so a broken setup fails with its reason instead of a table of errors. */
async function checkPaths(processes: BenchProcesses): Promise<void> {
  for (const benchPath of ["direct", "gateway"] as const) {
    const { url, headers, body } = requestFor(processes, benchPath, false);
    const response = await fetch(url, { method: "POST", headers, body });
    const text = await response.text();
    if (response.status !== 200) throw new Error(`The ${benchPath} path returned HTTP ${response.status}: ${text}`);
    const backend = response.headers.get("x-spillway-backend");
    if (benchPath === "gateway" && backend !== "local") throw new Error(`The gateway served the check request from '${backend}', not the local replica.`);
  }
}

async function measureAll(processes: BenchProcesses, options: GatewayBenchOptions): Promise<RunSummary[]> {
  const runs: RunSummary[] = [];
  for (const stream of options.stream ? [false, true] : [false]) {
    for (const rate of options.rates) {
      for (const benchPath of ["direct", "gateway"] as const) {
        runs.push(await measureRun(processes, options, { path: benchPath, rate, stream }));
      }
    }
  }
  return runs;
}

async function measureRun(
  processes: BenchProcesses,
  options: GatewayBenchOptions,
  run: { path: BenchPath; rate: number; stream: boolean },
): Promise<RunSummary> {
  const label = `${run.path} ${run.stream ? "stream" : "non-stream"} at ${run.rate} req/s`;
  const job = (seconds: number): LoadJob => ({
    ...requestFor(processes, run.path, run.stream),
    stream: run.stream,
    rate: run.rate,
    seconds,
    timeoutMilliseconds: requestTimeoutMilliseconds,
  });
  if (options.warmupSeconds > 0) {
    console.error(`warming up: ${label} for ${options.warmupSeconds} s`);
    await processes.load.run(job(options.warmupSeconds), (options.warmupSeconds + jobGraceSeconds) * 1000);
  }
  console.error(`measuring: ${label} for ${options.durationSeconds} s`);
  const before = await readCpu(processes);
  const result = await processes.load.run(job(options.durationSeconds), (options.durationSeconds + jobGraceSeconds) * 1000);
  const cost = cpuCost(before, await readCpu(processes), result.succeeded, result.elapsedSeconds);
  return {
    ...run,
    result,
    gatewayCpuMicroseconds: run.path === "gateway" ? cost.controllerPerRequest : undefined,
    upstreamCpuMicroseconds: cost.upstreamPerRequest,
    otherCores: cost.otherCores,
  };
}

/** Builds the same request bytes for both paths. The upstream ignores the API key. */
function requestFor(processes: BenchProcesses, benchPath: BenchPath, stream: boolean): Pick<LoadJob, "url" | "headers" | "body"> {
  const base = benchPath === "direct" ? processes.upstream.url : processes.controller.url;
  const body = JSON.stringify({
    model: benchPool,
    messages: [
      { role: "system", content: "You answer in one sentence." },
      { role: "user", content: "Describe a spillway at dawn." },
    ],
    max_tokens: 64,
    temperature: 0,
    ...(stream ? { stream: true, stream_options: { include_usage: true } } : {}),
  });
  return {
    url: `${base ?? ""}/v1/chat/completions`,
    headers: { "content-type": "application/json", authorization: `Bearer ${benchApiKey}` },
    body,
  };
}

function describeRun(options: GatewayBenchOptions, loadAverages: string, seconds: number): Record<string, string> {
  return {
    CPU: cpus()[0]?.model.trim() ?? "unknown",
    "CPU cores usable": String(availableParallelism()),
    Node: process.version,
    "Load average (1, 5, 15 min) before / after": loadAverages,
    Runs: `${options.durationSeconds} s measured after ${options.warmupSeconds} s of warm-up, per path, rate and kind of reply`,
    Gateway: "real controller, one API key, usage journal on disk, info-level logs to a file, no overflow",
    Upstream: "canned worker replies at once (non-stream: 1 JSON body; stream: 6 events, usage, [DONE])",
    Duration: `${seconds.toFixed(0)} s`,
  };
}

function runNotes(options: GatewayBenchOptions, controllerLog: string): string[] {
  const notes: string[] = [];
  const problems = readFileSync(controllerLog, "utf8")
    .split("\n")
    .filter((line) => /"level":(4|5|6)0\b/.test(line));
  notes.push(
    problems.length === 0
      ? "The controller logged no warnings or errors."
      : `The controller logged ${problems.length} warnings or errors, the first: ${problems[0]?.slice(0, 300) ?? ""}`,
  );
  notes.push(
    "Other CPU is what anything outside the benchmark's processes took during a run, in cores: other programs, " +
      "kernel work charged to no process and hypervisor steal. A run with much of it was measured on a busy machine.",
  );
  if (options.profileDirectory !== undefined) {
    notes.push(`The controller ran under \`--cpu-prof\` (profile in ${options.profileDirectory}), which slows it; do not compare these numbers with unprofiled runs.`);
  }
  return notes;
}

function commandLine(): string {
  const args = process.argv.slice(2);
  return args.length === 0 ? "npm run bench:gateway" : `npm run bench:gateway -- ${args.join(" ")}`;
}

main().catch((error: unknown) => {
  console.error(error instanceof Error ? (error.stack ?? error.message) : error);
  process.exitCode = 1;
});
