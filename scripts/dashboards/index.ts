/**
 * Spillway's Grafana dashboards, built with Grafana's foundation SDK. `npm run generate:dashboards`
 * writes them to dashboards/, where the Helm chart and Grafana's import pick them up.
 */
import type { Dashboard, Panel, RowPanel } from "@grafana/grafana-foundation-sdk/dashboard";
import type { dataquery as PrometheusQuery } from "@grafana/grafana-foundation-sdk/prometheus";

import { overviewDashboard } from "./overview.ts";
import { poolsDashboard } from "./pools.ts";

export interface DashboardFile {
  /** Path relative to the repository root. */
  path: string;
  dashboard: Dashboard;
}

/** Builds every dashboard with stable panel ids, so regenerating an unchanged source gives the same JSON. */
export function buildDashboards(): DashboardFile[] {
  return [
    { path: "dashboards/spillway-overview.json", dashboard: numberPanels(overviewDashboard().build()) },
    { path: "dashboards/spillway-pools.json", dashboard: numberPanels(poolsDashboard().build()) },
  ];
}

/** Serializes a dashboard as its file content: JSON indented by two spaces, with a final newline. */
export function dashboardJson(dashboard: Dashboard): string {
  return `${JSON.stringify(dashboard, null, 2)}\n`;
}

/** One PromQL target of a panel, as written in the dashboard (with Grafana variables). */
export interface PanelQuery {
  panel: string;
  refId: string;
  expr: string;
  legend: string;
}

/** Returns the dashboard's panels other than rows. */
export function contentPanels(dashboard: Dashboard): Panel[] {
  return (dashboard.panels ?? []).filter((panel): panel is Panel => panel.type !== "row");
}

/** Lists every PromQL target of the dashboard's panels. */
export function panelQueries(dashboard: Dashboard): PanelQuery[] {
  return contentPanels(dashboard).flatMap((panel) =>
      (panel.targets ?? []).map((target) => {
        const query = target as PrometheusQuery;
        return { panel: panel.title ?? "", refId: query.refId ?? "", expr: query.expr, legend: query.legendFormat ?? "" };
      }),
    );
}

/**
 * Replaces Grafana variables (`$name` and `${name}`) as Grafana does before it sends a query: `values`
 * gives each one, such as `.*` for a multi-value variable set to All and a window like `1m` for
 * `__rate_interval`. Throws on a variable without a value, so no query reaches Prometheus half-substituted.
 */
export function substituteVariables(expr: string, values: Record<string, string>): string {
  return expr.replace(/\$\{(\w+)\}|\$(\w+)/g, (match, braced: string | undefined, bare: string | undefined) => {
    const name = braced ?? bare ?? "";
    const value = values[name];
    if (value === undefined) throw new Error(`no value for the variable ${match} in ${expr}`);
    return value;
  });
}

/** Returns the variable values of a dashboard with every pool and tenant selected (Grafana's "All"). */
export function allSelected(rateInterval: string): Record<string, string> {
  return { pool: ".*", tenant: ".*", __rate_interval: rateInterval };
}

// Grafana needs a unique id per panel for links and edits; the SDK leaves ids to the caller.
function numberPanels(dashboard: Dashboard): Dashboard {
  (dashboard.panels ?? []).forEach((panel: Panel | RowPanel, index) => {
    panel.id = index + 1;
  });
  return dashboard;
}
