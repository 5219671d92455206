import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { VariableType, type VariableModel } from "@grafana/grafana-foundation-sdk/dashboard";

import { allSelected, buildDashboards, contentPanels, dashboardJson, panelQueries, substituteVariables } from "../scripts/dashboards/index.ts";
import { driveLoad, startObservedRun, testLoadPlan, type LoadReport, type ObservedRun } from "./support/observed-run.ts";
import { findPrometheus } from "./support/prometheus.ts";

const root = path.resolve(import.meta.dirname, "..");
const dashboards = buildDashboards();
const queries = dashboards.flatMap(({ path: file, dashboard }) => panelQueries(dashboard).map((query) => ({ file, ...query })));

describe("dashboard files", () => {
  test("committed JSON is current", () => {
    for (const { path: file, dashboard } of dashboards) {
      const committed = readFileSync(path.join(root, file), "utf8");
      assert.ok(committed === dashboardJson(dashboard), `${file} differs from its source in scripts/dashboards/; run npm run generate:dashboards`);
    }
  });

  test("uids, variables and panels are complete", () => {
    assert.deepEqual(dashboards.map(({ dashboard }) => dashboard.uid), ["spillway-overview", "spillway-pools"], "stable uids");
    for (const { path: file, dashboard } of dashboards) {
      const variables = (dashboard.templating?.list ?? []).map((variable: VariableModel) => variable.name);
      assert.equal(variables[0], "datasource", `${file}: the data source variable comes first`);
      assert.ok(variables.includes("pool"), `${file} has a pool variable`);
      for (const panel of contentPanels(dashboard)) {
        assert.ok((panel.description ?? "").length > 20, `${file}: panel ${panel.title} has a description`);
        assert.ok((panel.fieldConfig?.defaults.unit ?? "") !== "", `${file}: panel ${panel.title} has a unit`);
        assert.equal(panel.datasource?.uid, "${datasource}", `${file}: panel ${panel.title} uses the data source variable`);
      }
    }
    assert.ok(queries.length >= 30, `${queries.length} panel queries`);
    for (const query of queries) assert.doesNotMatch(query.expr, /job=/, `${query.panel} names no scrape job`);
  });

  test("variables are substituted as Grafana does", () => {
    const expr = 'sum(rate(spillway_requests_total{pool=~"$pool"}[$__rate_interval])) / ${pool_count}';
    assert.equal(substituteVariables(expr, { pool: ".*", __rate_interval: "1m", pool_count: "2" }), 'sum(rate(spillway_requests_total{pool=~".*"}[1m])) / 2', "both forms replaced");
    assert.throws(() => substituteVariables(expr, { pool: ".*" }), /\$__rate_interval/, "a variable without a value is an error");
  });
});

describe("dashboards against Prometheus", () => {
  let run: ObservedRun;
  let report: LoadReport;
  let rateInterval: string;

  before(async () => {
    findPrometheus();
    run = await startObservedRun();
    report = await driveLoad(run, testLoadPlan);
    // Two more scrapes, so the last requests are in Prometheus.
    await new Promise((resolve) => setTimeout(resolve, 2500));
    // One window over the whole run, so rates and quantiles see all of its load.
    rateInterval = `${Math.ceil((Date.now() - run.startedAt.getTime()) / 1000) + 5}s`;
  });

  after(async () => {
    await run?.stop();
  });

  test("load served locally and overflowed", () => {
    assert.deepEqual(report.failures, [], "every request of the load succeeded");
    assert.ok(report.responses.local > 0, `${report.responses.local} local responses`);
    assert.ok(report.responses.gemini > 0, `${report.responses.gemini} gemini responses`);
  });

  test("every panel query returns data", async () => {
    const problems: string[] = [];
    for (const query of queries) {
      const expr = substituteVariables(query.expr, allSelected(rateInterval));
      const where = `${query.file} "${query.panel}" ${query.refId}: ${expr}`;
      try {
        const series = await run.prometheus.query(expr);
        if (series.length === 0) problems.push(`${where} returned no series`);
        else if (!series.some((entry) => Number.isFinite(Number(entry.value?.[1])))) problems.push(`${where} returned only NaN or infinite values`);
      } catch (error) {
        problems.push(`${where} failed: ${String(error)}`);
      }
    }
    assert.deepEqual(problems, [], "panel queries without data");
  });

  test("variables list pools and tenants", async () => {
    const pools = await run.prometheus.labelValues("pool", "spillway_pool_replicas");
    assert.deepEqual(pools, ["npc", "quest"], "pool variable values");
    const tenants = await run.prometheus.labelValues("tenant", "spillway_spend_usd_total");
    assert.ok(tenants.includes("studio-a"), `tenant variable values: ${tenants.join(", ")}`);
    assert.ok(tenants.includes("studio-b"), `tenant variable values: ${tenants.join(", ")}`);
    for (const { path: file, dashboard } of dashboards) {
      for (const variable of dashboard.templating?.list ?? []) {
        if (variable.type !== VariableType.Query) continue;
        const match = /^label_values\((\w+), (\w+)\)$/.exec(typeof variable.query === "string" ? variable.query : "");
        assert.ok(match !== null, `${file}: variable ${variable.name} is a label_values query`);
        const values = await run.prometheus.labelValues(match[2]!, match[1]!);
        assert.ok(values.length > 0, `${file}: variable ${variable.name} has values`);
      }
    }
  });

  test("every exported metric is on a panel", async () => {
    const endpoints = [run.spillway.url, ...[...run.spillway.workers.values()].map((worker) => worker.url)];
    const families = new Set<string>();
    for (const url of endpoints) {
      const text = await (await fetch(`${url}/metrics`)).text();
      for (const match of text.matchAll(/^# TYPE (spillway_\w+) \w+$/gm)) families.add(match[1]!);
    }
    assert.ok(families.has("spillway_requests_total"), `gateway families read: ${[...families].join(", ")}`);
    assert.ok(families.has("spillway_worker_slots"), `worker families read: ${[...families].join(", ")}`);
    const missing = [...families].filter((family) => {
      const name = new RegExp(`(?<![\\w:])${family}(_bucket|_sum|_count)?(?![\\w:])`);
      return !queries.some((query) => name.test(query.expr));
    });
    assert.deepEqual(missing, [], "metric families that no panel queries");
  });

  test("run shows ladder steps, swaps and overflow", async () => {
    const value = async (expr: string) => Number((await run.prometheus.query(expr))[0]?.value?.[1] ?? Number.NaN);
    assert.ok((await value('sum(spillway_ladder_steps_total{pool="npc", direction="down"})')) >= 1, "the npc replica stepped down");
    assert.ok((await value("sum(spillway_worker_variant_swaps_total)")) >= 1, "a worker swapped its variant");
    for (const reason of ["saturated", "cold_start", "context_length"]) {
      assert.ok((await value(`sum(spillway_overflow_total{reason="${reason}"})`)) >= 1, `overflow with reason ${reason}`);
    }
    assert.ok((await value('sum(spillway_upstream_errors_total{backend="gemini"})')) >= 1, "a failed gemini call");
  });
});
