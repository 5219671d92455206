/**
 * Renders pictures of the main dashboard panels for the docs (`npm run render:dashboard-images`).
 * It starts the same local Spillway run as test/dashboards.test.ts: tiny models, a stand-in for Gemini
 * and a real Prometheus. It evaluates the panels' own queries over the run with Prometheus's range API
 * and draws them into docs/images/dashboard-overview.png and docs/images/dashboard-pools.png.
 *
 * Needs Debian's `prometheus` package on PATH. Took about 70 seconds on a 2-core development machine.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

import type { Dashboard } from "@grafana/grafana-foundation-sdk/dashboard";
import type { dataquery as PrometheusQuery } from "@grafana/grafana-foundation-sdk/prometheus";
import { Resvg } from "@resvg/resvg-js";

import { driveLoad, startObservedRun, type LoadPlan } from "../test/support/observed-run.ts";
import type { RunningPrometheus } from "../test/support/prometheus.ts";
import { allSelected, buildDashboards, contentPanels, substituteVariables } from "./dashboards/index.ts";
import { renderPanelGrid, type PlotPanel } from "./dashboards/plot.ts";

const help = `Usage: npm run render:dashboard-images [-- --out-dir DIR]

Runs Spillway locally under load with a real Prometheus and draws the main panels of both dashboards
into PNG files.

Options:
  --out-dir <dir>   Where the PNG files go (default docs/images)
  --help            Show this help
`;

/** The panels each picture shows, by title, in reading order. */
const pictures = [
  {
    file: "dashboard-overview.png",
    uid: "spillway-overview",
    panels: [
      "Requests per second by backend",
      "Time to first token per pool",
      "Overflow reasons",
      "Tokens per second by backend",
      "Spend per hour by tenant",
      "USD per 1M tokens, local vs Gemini",
    ],
  },
  {
    file: "dashboard-pools.png",
    uid: "spillway-pools",
    panels: ["Variant per replica (bits per weight)", "Queue depth", "Slots busy", "Workers per variant", "Decode rate per variant", "Time per output token"],
  },
];

// Longer phases than the test's, so the pictures show the load rising, the ladder and the recovery.
const imageLoadPlan: LoadPlan = { busyClients: 8, busyMinSeconds: 30, busyMaxSeconds: 90, calmMinSeconds: 25, calmMaxSeconds: 60 };
// Grafana's $__rate_interval is at least four scrape intervals; a wider window smooths a short run.
const rateInterval = "10s";
const stepSeconds = 2;

/** Fills a Grafana legend template such as `{{pool}} p95` from a series' labels. */
function legendOf(template: string, labels: Record<string, string>): string {
  if (template === "") return JSON.stringify(labels);
  return template.replace(/\{\{\s*(\w+)\s*\}\}/g, (_match, name: string) => labels[name] ?? "");
}

async function plotPanels(dashboard: Dashboard, titles: string[], prometheus: RunningPrometheus, start: Date, end: Date): Promise<PlotPanel[]> {
  const panels: PlotPanel[] = [];
  for (const title of titles) {
    const panel = contentPanels(dashboard).find((candidate) => candidate.title === title);
    if (panel === undefined) throw new Error(`no panel "${title}" in ${dashboard.uid ?? ""}`);
    const custom = (panel.fieldConfig?.defaults.custom ?? {}) as { stacking?: { mode?: string }; lineInterpolation?: string };
    const plot: PlotPanel = {
      title,
      unit: panel.fieldConfig?.defaults.unit ?? "none",
      series: [],
      stacked: custom.stacking?.mode === "normal",
      stepped: custom.lineInterpolation === "stepAfter",
    };
    for (const target of (panel.targets ?? []) as PrometheusQuery[]) {
      const expr = substituteVariables(target.expr, allSelected(rateInterval));
      for (const series of await prometheus.queryRange(expr, start, end, stepSeconds)) {
        plot.series.push({
          label: legendOf(target.legendFormat ?? "", series.metric),
          points: (series.values ?? []).map(([time, value]) => [time, Number(value)]),
        });
      }
    }
    plot.series.sort((a, b) => a.label.localeCompare(b.label));
    panels.push(plot);
  }
  return panels;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { "out-dir": { type: "string" }, help: { type: "boolean", default: false } } });
  if (values.help) {
    process.stdout.write(help);
    return;
  }
  const outDirectory = path.resolve(values["out-dir"] ?? path.join(import.meta.dirname, "..", "docs", "images"));
  mkdirSync(outDirectory, { recursive: true });

  const run = await startObservedRun();
  try {
    process.stdout.write("running the load (about a minute)\n");
    const report = await driveLoad(run, imageLoadPlan);
    if (report.failures.length > 0) throw new Error(`requests failed during the load:\n${report.failures.join("\n")}`);
    // Two more scrapes, so the end of the load is in Prometheus.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const start = new Date(run.startedAt.getTime() - 5000);
    const end = new Date();
    const caption = `A local run of ${Math.round((end.getTime() - start.getTime()) / 1000)} s: spillway up with tiny test models on CPU, a stand-in for Gemini, ${report.responses.local} local and ${report.responses.gemini} Gemini responses. Queries as in the dashboards, with every pool and tenant selected and $__rate_interval = ${rateInterval}.`;

    const dashboards = new Map(buildDashboards().map(({ dashboard }) => [dashboard.uid, dashboard]));
    for (const picture of pictures) {
      const dashboard = dashboards.get(picture.uid);
      if (dashboard === undefined) throw new Error(`no dashboard with uid ${picture.uid}`);
      const panels = await plotPanels(dashboard, picture.panels, run.prometheus, start, end);
      const svg = renderPanelGrid(dashboard.title ?? picture.uid, caption, panels, start.getTime() / 1000, end.getTime() / 1000);
      const png = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: "DejaVu Sans" } }).render().asPng();
      const file = path.join(outDirectory, picture.file);
      writeFileSync(file, png);
      process.stdout.write(`wrote ${file} (${Math.round(png.length / 1024)} KiB)\n`);
    }
  } finally {
    await run.stop();
  }
}

await main();
