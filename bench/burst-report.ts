import type { Outcome, RateStep } from "./burst-load.ts";
import type { PoolAccounts, Scenario } from "./burst-pool.ts";
import { percentile } from "./load.ts";

/** Everything measured in one scenario. */
export interface ScenarioResult {
  scenario: Scenario;
  outcomes: Outcome[];
  accounts: PoolAccounts;
  maxReplicas: number;
  lowestQuant: string;
  /** Seconds from the first request to the last response. */
  seconds: number;
}

export interface BurstReport {
  environment: Record<string, string>;
  command: string;
  steps: readonly RateStep[];
  multipliers: readonly number[];
  sloSeconds: number;
  results: readonly ScenarioResult[];
}

interface Figures {
  requests: number;
  failed: number;
  p50: number;
  p95: number;
  overflowShare: number;
}

function figuresOf(outcomes: readonly Outcome[]): Figures {
  const served = outcomes.filter((outcome) => outcome.ok);
  const firstTokens = served.flatMap((outcome) => outcome.timeToFirstTokenSeconds ?? []);
  const overflowed = served.filter((outcome) => outcome.backend === "gemini").length;
  return {
    requests: outcomes.length,
    failed: outcomes.length - served.length,
    p50: percentile(firstTokens, 50),
    p95: percentile(firstTokens, 95),
    overflowShare: outcomes.length === 0 ? 0 : overflowed / outcomes.length,
  };
}

export interface TargetCheck {
  target: string;
  met: boolean;
  measured: string;
}

/**
 * Checks the scenario with all three levers: p95 time to first token within the SLO, no failed request,
 * and a smaller overflow share than overflow alone needed.
 */
export function checkTargets(results: readonly ScenarioResult[], sloSeconds: number): TargetCheck[] {
  const all = results.find((result) => result.scenario.ladder && result.scenario.overflow);
  const alone = results.find((result) => !result.scenario.ladder && result.scenario.overflow);
  if (all === undefined) return [];
  const figures = figuresOf(all.outcomes);
  const checks: TargetCheck[] = [
    { target: `p95 time to first token within the ${sloSeconds} s SLO`, met: figures.p95 <= sloSeconds, measured: `${seconds(figures.p95)} s` },
    { target: "zero failed requests", met: figures.failed === 0, measured: String(figures.failed) },
  ];
  if (alone !== undefined) {
    const aloneShare = figuresOf(alone.outcomes).overflowShare;
    checks.push({
      target: "smaller overflow share than overflow alone",
      met: figures.overflowShare < aloneShare,
      measured: `${share(figures.overflowShare)} vs ${share(aloneShare)}`,
    });
  }
  return checks;
}

/** Renders the report's markdown, headed by a level-2 title so it can be appended to docs/benchmarks.md. */
export function renderBurstReport(report: BurstReport): string {
  const lines = ["## Burst: replicas, ladder, overflow", "", "| | |", "|---|---|"];
  for (const [name, value] of Object.entries(report.environment)) lines.push(`| ${name} | ${value} |`);
  lines.push("", "Command:", "", "```sh", report.command, "```", "");
  lines.push(...summaryTable(report.results), "");
  lines.push(...stepTable(report), "");
  lines.push(...failureLines(report.results));
  lines.push("Targets, for scenario (c) with all three levers:", "");
  for (const check of checkTargets(report.results, report.sloSeconds)) {
    lines.push(`- ${check.target}: ${check.met ? "met" : "missed"} (${check.measured})`);
  }
  lines.push(
    "",
    "Time to first token is measured by the client, from sending the request to the first content in the stream, over",
    "successful requests only. A request fails when its status is not 200 or its stream does not end with `[DONE]`; a 429",
    "after the gateway's queue timeout counts as failed. Overflow share is the share of all requests that Gemini served.",
  );
  return lines.join("\n") + "\n";
}

function summaryTable(results: readonly ScenarioResult[]): string[] {
  const lines = [
    "| Scenario | Requests | TTFT p50 (s) | TTFT p95 (s) | Failed | Overflow share | Local spend (USD) | Gemini spend (USD) | Ladder steps down / up | Lowest rung | Max replicas | Run (s) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|",
  ];
  for (const result of results) {
    const figures = figuresOf(result.outcomes);
    const { accounts } = result;
    lines.push(
      `| ${result.scenario.label} | ${figures.requests} | ${seconds(figures.p50)} | ${seconds(figures.p95)} | ${figures.failed} | ` +
        `${share(figures.overflowShare)} | ${usd(accounts.localSpendUsd)} | ${usd(accounts.geminiSpendUsd)} | ` +
        `${accounts.stepsDown} / ${accounts.stepsUp} | ${result.lowestQuant} | ${result.maxReplicas} | ${result.seconds.toFixed(0)} |`,
    );
  }
  return lines;
}

/** Time to first token p95 and failures per step of the profile, one column per scenario. */
function stepTable(report: BurstReport): string[] {
  const header = report.results.map((result) => ` ${result.scenario.label} |`).join("");
  const lines = [
    "TTFT p95 in seconds (failed requests) by step of the rate profile, by the step in which a request was sent:",
    "",
    `| Step | Rate (req/s) |${header}`,
    `|---:|---:|${report.results.map(() => "---:|").join("")}`,
  ];
  for (const [index, step] of report.steps.entries()) {
    const cells = report.results.map((result) => {
      const figures = figuresOf(result.outcomes.filter((outcome) => outcome.step === index));
      return ` ${seconds(figures.p95)} (${figures.failed}) |`;
    });
    lines.push(`| ${index + 1}: ${report.multipliers[index] ?? "?"}x | ${step.requestsPerSecond.toFixed(1)} |${cells.join("")}`);
  }
  return lines;
}

/** Failed requests of each scenario by what went wrong, so a reader can tell queue timeouts from broken streams. */
function failureLines(results: readonly ScenarioResult[]): string[] {
  const lines: string[] = [];
  for (const result of results) {
    const counts = new Map<string, number>();
    for (const outcome of result.outcomes.filter((candidate) => !candidate.ok)) {
      const kind = failureKind(outcome);
      counts.set(kind, (counts.get(kind) ?? 0) + 1);
    }
    if (counts.size === 0) continue;
    const parts = [...counts].map(([kind, count]) => `${count} ${kind}`).join(", ");
    lines.push(`- Failed in ${result.scenario.label}: ${parts}`);
  }
  return lines.length === 0 ? [] : [...lines, ""];
}

function failureKind(outcome: Outcome): string {
  if (outcome.status === 0) return "no response";
  if (outcome.status === 200) return "stream without [DONE]";
  return `HTTP ${outcome.status}`;
}

function seconds(value: number): string {
  return Number.isNaN(value) ? "n/a" : value.toFixed(2);
}

function share(value: number): string {
  return `${(value * 100).toFixed(1)}%`;
}

function usd(value: number): string {
  return value.toFixed(4);
}
