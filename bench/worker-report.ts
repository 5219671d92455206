import type { ScenarioSummary } from "./load.ts";

export interface ScenarioRow {
  label: string;
  summary: ScenarioSummary;
}

export interface Ratio {
  label: string;
  numerator: number;
  denominator: number;
  /** Describes the target, such as "≥ 0.95". */
  target: string;
  met(value: number): boolean;
}

export interface Report {
  environment: Record<string, string>;
  command: string;
  rows: ScenarioRow[];
  ratios: Ratio[];
  notes: string[];
}

/** Renders the run as markdown: environment, one row per scenario, then the ratios against their targets. */
export function renderReport(report: Report): string {
  const lines = ["## Environment", "", "| | |", "|---|---|"];
  for (const [name, value] of Object.entries(report.environment)) lines.push(`| ${name} | ${value} |`);
  lines.push("", "Command:", "", "```sh", report.command, "```", "", "## Results", "");
  lines.push(
    "| Scenario | Concurrency | Requests | Prompt tokens | Completion tokens | Decode tok/s per request (median) | Aggregate tok/s | TTFT p50 (ms) | TTFT p95 (ms) |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
  );
  for (const { label, summary } of report.rows) {
    lines.push(
      `| ${label} | ${summary.concurrency} | ${summary.requests} | ${formatNumber(summary.promptTokens, 0)} | ` +
        `${formatNumber(summary.completionTokens, 1)} | ${formatNumber(summary.decodeTokensPerSecond, 1)} | ` +
        `${formatNumber(summary.aggregateTokensPerSecond, 1)} | ${formatNumber(summary.timeToFirstTokenP50Seconds * 1000, 1)} | ` +
        `${formatNumber(summary.timeToFirstTokenP95Seconds * 1000, 1)} |`,
    );
  }
  lines.push("", "## Ratios", "", "| Ratio | Value | Target | Met |", "|---|---:|---|---|");
  for (const ratio of report.ratios) {
    const value = ratio.numerator / ratio.denominator;
    lines.push(`| ${ratio.label} | ${formatNumber(value, 3)} | ${ratio.target} | ${formatVerdict(ratio, value)} |`);
  }
  if (report.notes.length > 0) {
    lines.push("", "## Notes", "");
    for (const note of report.notes) lines.push(`- ${note}`);
  }
  return lines.join("\n") + "\n";
}

function formatVerdict(ratio: Ratio, value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  return ratio.met(value) ? "yes" : "**no**";
}

function formatNumber(value: number, digits: number): string {
  return Number.isFinite(value) ? value.toFixed(digits) : "n/a";
}
