import type { LoadResult } from "./gateway-protocol.ts";
import { percentile } from "./load.ts";

/** The path of the load generator's requests: straight to the upstream or through the gateway. */
export type BenchPath = "direct" | "gateway";

/** One measured run: one path, one rate, one kind of reply. */
export interface RunSummary {
  path: BenchPath;
  rate: number;
  stream: boolean;
  result: LoadResult;
  /** CPU time of the controller process per successful request, or undefined for direct runs. */
  gatewayCpuMicroseconds: number | undefined;
  upstreamCpuMicroseconds: number;
  /** Cores taken by anything but the benchmark's processes during the run, or undefined where unknown. */
  otherCores: number | undefined;
}

export interface GatewayReport {
  environment: Record<string, string>;
  command: string;
  runs: RunSummary[];
  notes: string[];
}

/** Latency targets, set for 1,000 requests/s on 2 cores. Every rate is checked against them. */
export const targets = { addedP50Milliseconds: 1, addedP99Milliseconds: 5 };

/** Renders the report's markdown, headed by a level-2 title so it can be appended to docs/benchmarks.md. */
export function renderGatewayReport(report: GatewayReport): string {
  const lines = ["## Gateway overhead", "", "| | |", "|---|---|"];
  for (const [name, value] of Object.entries(report.environment)) lines.push(`| ${name} | ${value} |`);
  lines.push("", "Command:", "", "```sh", report.command, "```", "");
  for (const stream of [false, true]) {
    const runs = report.runs.filter((run) => run.stream === stream);
    if (runs.length > 0) lines.push(...latencyTable(runs, stream), "");
  }
  lines.push(...addedLatencyTable(report.runs));
  const notes = [...report.notes, sendDelayNote(report.runs), ...failureNotes(report.runs)];
  if (notes.length > 0) {
    lines.push("", "Notes:", "");
    for (const note of notes) lines.push(`- ${note}`);
  }
  return lines.join("\n") + "\n";
}

/** Returns whether every rate met both targets and every run finished without errors. */
export function targetsMet(runs: readonly RunSummary[]): boolean {
  return pairs(runs).every((pair) => meetsTargets(pair.direct, pair.gateway)) && runs.every((run) => failures(run.result) === 0);
}

function latencyTable(runs: readonly RunSummary[], stream: boolean): string[] {
  const firstChunk = stream ? " First event p50 / p99 (ms) |" : "";
  const lines = [
    `### ${stream ? "Streaming replies (latency to `[DONE]`)" : "Non-streaming replies"}`,
    "",
    `| Rate (req/s) | Path | Achieved (req/s) | Succeeded | Errors | Timeouts | p50 (ms) | p90 (ms) | p99 (ms) |${firstChunk} Gateway CPU (µs/req) | Upstream CPU (µs/req) | Other CPU (cores) |`,
    `|---:|---|---:|---:|---:|---:|---:|---:|---:|${stream ? "---:|" : ""}---:|---:|---:|`,
  ];
  for (const run of runs) {
    const { result } = run;
    const chunkCells = stream
      ? ` ${format(percentile(result.firstChunkLatencies, 50), 2)} / ${format(percentile(result.firstChunkLatencies, 99), 2)} |`
      : "";
    lines.push(
      `| ${run.rate} | ${run.path} | ${format(result.succeeded / result.elapsedSeconds, 1)} | ${result.succeeded} | ${result.errors} | ` +
        `${result.timeouts} | ${format(percentile(result.latencies, 50), 2)} | ${format(percentile(result.latencies, 90), 2)} | ` +
        `${format(percentile(result.latencies, 99), 2)} |${chunkCells} ${format(run.gatewayCpuMicroseconds ?? Number.NaN, 0)} | ` +
        `${format(run.upstreamCpuMicroseconds, 0)} | ${format(run.otherCores ?? Number.NaN, 2)} |`,
    );
  }
  return lines;
}

function addedLatencyTable(runs: readonly RunSummary[]): string[] {
  const lines = [
    "### Added latency (gateway − direct)",
    "",
    "| Replies | Rate (req/s) | Added p50 (ms) | Added p99 (ms) | Gateway / direct p50 | Gateway / direct p99 | Target | Met |",
    "|---|---:|---:|---:|---:|---:|---|---|",
  ];
  const target = `≤ ${targets.addedP50Milliseconds} ms p50, ≤ ${targets.addedP99Milliseconds} ms p99`;
  for (const { direct, gateway } of pairs(runs)) {
    const [directP50, directP99] = [percentile(direct.result.latencies, 50), percentile(direct.result.latencies, 99)];
    const [gatewayP50, gatewayP99] = [percentile(gateway.result.latencies, 50), percentile(gateway.result.latencies, 99)];
    lines.push(
      `| ${direct.stream ? "stream" : "non-stream"} | ${direct.rate} | ${format(gatewayP50 - directP50, 2)} | ${format(gatewayP99 - directP99, 2)} | ` +
        `${format(gatewayP50 / directP50, 2)} | ${format(gatewayP99 / directP99, 2)} | ${target} | ${meetsTargets(direct, gateway) ? "yes" : "**no**"} |`,
    );
  }
  return lines;
}

/** Pairs the direct and gateway runs of each rate and kind of reply, in the order they ran. */
function pairs(runs: readonly RunSummary[]): Array<{ direct: RunSummary; gateway: RunSummary }> {
  const found: Array<{ direct: RunSummary; gateway: RunSummary }> = [];
  for (const direct of runs.filter((run) => run.path === "direct")) {
    const gateway = runs.find((run) => run.path === "gateway" && run.rate === direct.rate && run.stream === direct.stream);
    if (gateway !== undefined) found.push({ direct, gateway });
  }
  return found;
}

function meetsTargets(direct: RunSummary, gateway: RunSummary): boolean {
  const addedP50 = percentile(gateway.result.latencies, 50) - percentile(direct.result.latencies, 50);
  const addedP99 = percentile(gateway.result.latencies, 99) - percentile(direct.result.latencies, 99);
  return addedP50 <= targets.addedP50Milliseconds && addedP99 <= targets.addedP99Milliseconds;
}

function failures(result: LoadResult): number {
  return result.errors + result.timeouts;
}

function failureNotes(runs: readonly RunSummary[]): string[] {
  return runs
    .filter((run) => failures(run.result) > 0)
    .map((run) => {
      const kind = run.stream ? "stream" : "non-stream";
      return `${run.path} ${kind} at ${run.rate} req/s failed ${failures(run.result)} requests, such as: ${run.result.errorSamples.join("; ")}`;
    });
}

/** Describes how far the load generator fell behind its schedule. That delay is not part of any latency in the tables. */
function sendDelayNote(runs: readonly RunSummary[]): string {
  const worst = runs.reduce<RunSummary | undefined>((found, run) => {
    if (found === undefined) return run;
    return percentile(run.result.sendDelays, 99) > percentile(found.result.sendDelays, 99) ? run : found;
  }, undefined);
  if (worst === undefined) return "No run was measured.";
  return (
    "Latency runs from the moment a request was written. The load generator's own delay behind its schedule " +
    `(timer granularity and CPU contention) was at most ${format(percentile(worst.result.sendDelays, 99), 2)} ms at p99, ` +
    `in the ${worst.path} ${worst.stream ? "stream" : "non-stream"} run at ${worst.rate} req/s.`
  );
}

function format(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "n/a";
}
