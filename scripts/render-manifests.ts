/**
 * Copies the Grafana dashboards from dashboards/ into the chart, then renders the chart with default
 * values into manifests/ for `kubectl apply -f manifests/`. Run it with `npm run render:manifests` after
 * changing the chart or a dashboard; test/helm-artifacts.test.ts fails while either copy is stale.
 *
 * Helm's .Files can read only files inside the chart, which is why the chart keeps its own copy of
 * the dashboards.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { chartPath, repositoryRoot, runHelm } from "./helm.ts";

export const dashboardsSource = path.join(repositoryRoot, "dashboards");
export const chartDashboards = path.join(chartPath, "dashboards");
export const manifestsPath = path.join(repositoryRoot, "manifests");

/** The release name and namespace of the raw manifests, so kubectl users get objects named `spillway`. */
export const manifestsRelease = { name: "spillway", namespace: "spillway" };

const header =
  "# Rendered by `npm run render:manifests` from charts/spillway with default values " +
  `(release ${manifestsRelease.name}, namespace ${manifestsRelease.namespace}). Do not edit.\n`;

/** Returns the dashboard files the chart should contain, by file name. */
export function expectedChartDashboards(): Map<string, string> {
  const files = new Map<string, string>();
  if (!existsSync(dashboardsSource)) return files;
  for (const name of readdirSync(dashboardsSource).filter((file) => file.endsWith(".json")).sort()) {
    files.set(name, readFileSync(path.join(dashboardsSource, name), "utf8"));
  }
  return files;
}

/** Returns the dashboard files the chart contains now, by file name. */
export function currentChartDashboards(): Map<string, string> {
  const files = new Map<string, string>();
  if (!existsSync(chartDashboards)) return files;
  for (const name of readdirSync(chartDashboards).filter((file) => file.endsWith(".json")).sort()) {
    files.set(name, readFileSync(path.join(chartDashboards, name), "utf8"));
  }
  return files;
}

/** Renders the chart with `args` appended to `helm template`, throwing Helm's message when it fails. */
export function helmTemplate(args: string[]): string {
  const result = runHelm(["template", manifestsRelease.name, chartPath, "--namespace", manifestsRelease.namespace, ...args]);
  if (result.status !== 0) throw new Error(`helm template failed:\n${result.stderr}`);
  return result.stdout;
}

/**
 * Renders the files of manifests/, by file name. The namespace comes first, then the CRDs, so that
 * `kubectl apply -f manifests/`, which reads files in name order, creates what later files need.
 */
export function renderManifests(): Map<string, string> {
  const namespace = [
    "apiVersion: v1",
    "kind: Namespace",
    "metadata:",
    `  name: ${manifestsRelease.namespace}`,
    "  labels:",
    "    app.kubernetes.io/part-of: spillway",
    "",
  ].join("\n");
  const crds = helmTemplate(["--include-crds", "--skip-tests", "--show-only", "crds/modelpools.spillway.dev.yaml"]);
  const objects = helmTemplate(["--skip-tests"]);
  return new Map([
    ["00-namespace.yaml", header + namespace],
    ["01-crds.yaml", header + crds.trimStart()],
    ["02-spillway.yaml", header + objects.trimStart()],
  ]);
}

function writeChartDashboards(): void {
  rmSync(chartDashboards, { recursive: true, force: true });
  const dashboards = expectedChartDashboards();
  if (dashboards.size === 0) return;
  mkdirSync(chartDashboards, { recursive: true });
  for (const [name, content] of dashboards) writeFileSync(path.join(chartDashboards, name), content);
}

function writeManifests(): void {
  mkdirSync(manifestsPath, { recursive: true });
  for (const name of readdirSync(manifestsPath).filter((file) => file.endsWith(".yaml"))) rmSync(path.join(manifestsPath, name));
  for (const [name, content] of renderManifests()) writeFileSync(path.join(manifestsPath, name), content);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  writeChartDashboards();
  console.log(`copied ${expectedChartDashboards().size} dashboards into ${path.relative(process.cwd(), chartDashboards)}`);
  writeManifests();
  console.log(`wrote ${[...renderManifests().keys()].map((name) => path.join(path.relative(process.cwd(), manifestsPath), name)).join(", ")}`);
}
