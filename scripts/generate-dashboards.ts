/**
 * Writes Spillway's Grafana dashboards as JSON into dashboards/ (`npm run generate:dashboards`).
 * test/dashboards.test.ts fails when the committed files differ from what this writes.
 */
import { writeFileSync } from "node:fs";
import path from "node:path";

import { buildDashboards, dashboardJson } from "./dashboards/index.ts";

const root = path.resolve(import.meta.dirname, "..");
for (const { path: file, dashboard } of buildDashboards()) {
  writeFileSync(path.join(root, file), dashboardJson(dashboard));
  process.stdout.write(`wrote ${file} (${dashboard.panels?.length ?? 0} panels)\n`);
}
