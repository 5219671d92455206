/**
 * Renders charts/spillway with the Helm binary from scripts/helm.ts, for the chart tests.
 */
import { cpSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";

import { chartPath, runHelm, type HelmResult } from "../../scripts/helm.ts";
import { parseObjects, type KubeObject } from "./kube-validation.ts";

export { chartPath };

export const allFeaturesValues = path.join(chartPath, "ci", "all-features-values.yaml");
export const release = { name: "spillway", namespace: "games" };

/** Runs `helm template` for the test release with extra arguments, such as `--set` or `-f`. */
export function template(args: string[] = []): HelmResult {
  return runHelm(["template", release.name, chartPath, "--namespace", release.namespace, ...args]);
}

/** Renders the chart and parses every object. Throws Helm's message when rendering fails. */
export function renderObjects(args: string[] = []): KubeObject[] {
  const result = template(args);
  if (result.status !== 0) throw new Error(`helm template ${args.join(" ")} failed:\n${result.stderr}`);
  return parseObjects(result.stdout);
}

/** Returns the one object of `kind` whose name is `name`, or throws with a list of what was rendered. */
export function findObject(objects: KubeObject[], kind: string, name: string): KubeObject {
  const found = objects.find((object) => object.kind === kind && object.metadata.name === name);
  if (found === undefined) {
    const rendered = objects.map((object) => `${object.kind}/${object.metadata.name}`).join(", ");
    throw new Error(`no ${kind} named ${name}; rendered: ${rendered}`);
  }
  return found;
}

/**
 * Renders templates/NOTES.txt, which `helm template` leaves out and `helm install --dry-run` renders only
 * with a reachable cluster: a copy of the chart gets one more template that runs NOTES.txt through `tpl`
 * into a ConfigMap.
 */
export function renderNotes(args: string[] = []): string {
  const folder = mkdtempSync(path.join(os.tmpdir(), "spillway-chart-"));
  try {
    const copy = path.join(folder, "spillway");
    cpSync(chartPath, copy, { recursive: true });
    // .Files cannot read templates/, so the probe reads a copy of NOTES.txt at the chart's root.
    cpSync(path.join(copy, "templates", "NOTES.txt"), path.join(copy, "notes-under-test.txt"));
    writeFileSync(
      path.join(copy, "templates", "notes-under-test.yaml"),
      'apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes-under-test\ndata:\n  notes: {{ tpl (.Files.Get "notes-under-test.txt") . | toJson }}\n',
    );
    const result = runHelm(["template", release.name, copy, "--namespace", release.namespace, "--show-only", "templates/notes-under-test.yaml", ...args]);
    if (result.status !== 0) throw new Error(`rendering NOTES.txt failed:\n${result.stderr}`);
    const [configMap] = parseObjects(result.stdout);
    return (configMap?.data as { notes: string }).notes;
  } finally {
    rmSync(folder, { recursive: true, force: true });
  }
}
