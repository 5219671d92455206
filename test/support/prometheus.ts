/**
 * A real Prometheus server (Debian's `prometheus` package, 2.42) started for one test run: its own
 * temporary storage, a port on 127.0.0.1, and scrape targets read from JSON files (file-based service
 * discovery), so targets can be added while it runs.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { accessSync, constants, mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

/** One file-based service discovery group: targets as `host:port`, and labels added to their series. */
export interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

/** A sample vector or matrix entry from Prometheus's HTTP API; values are strings such as "0.25" or "NaN". */
export interface Series {
  metric: Record<string, string>;
  value?: [number, string];
  values?: Array<[number, string]>;
}

export interface RunningPrometheus {
  url: string;
  /** Scrape jobs, each with the discovery file the test rewrites. */
  targetFiles: Record<string, string>;
  /** Replaces the targets of a job; Prometheus rereads the file within a second or two. */
  setTargets(job: string, groups: TargetGroup[]): void;
  /** Evaluates an instant query; rejects with the expression when Prometheus reports an error. */
  query(expr: string, time?: Date): Promise<Series[]>;
  queryRange(expr: string, start: Date, end: Date, stepSeconds: number): Promise<Series[]>;
  labelValues(label: string, match: string): Promise<string[]>;
  /** Waits until the job has `count` targets that were scraped successfully. */
  waitForTargets(job: string, count: number, timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export class PrometheusNotInstalledError extends Error {
  override name = "PrometheusNotInstalledError";
}

/** Returns the path of the `prometheus` binary on PATH, or throws with the install command. */
export function findPrometheus(): string {
  for (const directory of (process.env.PATH ?? "").split(path.delimiter)) {
    const candidate = path.join(directory, "prometheus");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // Not in this directory; try the next one.
    }
  }
  throw new PrometheusNotInstalledError(
    "No prometheus binary on PATH. Install Debian's prometheus package: apt-get update && apt-get install -y --no-install-recommends prometheus (.ci/run does this).",
  );
}

async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  server.close();
  await once(server, "close");
  return port;
}

/**
 * Starts Prometheus with one scrape job per name in `jobs`, each discovering its targets from a JSON
 * file. The Debian service is not used: this process owns the server and stops it.
 */
export async function startPrometheus(jobs: string[], scrapeIntervalSeconds = 1): Promise<RunningPrometheus> {
  const binary = findPrometheus();
  const directory = mkdtempSync(path.join(tmpdir(), "spillway-prometheus-"));
  const targetFiles = Object.fromEntries(jobs.map((job) => [job, path.join(directory, `${job}.json`)]));
  for (const file of Object.values(targetFiles)) writeFileSync(file, "[]");
  const interval = `${scrapeIntervalSeconds}s`;
  const config = {
    global: { scrape_interval: interval, scrape_timeout: interval, evaluation_interval: interval },
    scrape_configs: jobs.map((job) => ({ job_name: job, file_sd_configs: [{ files: [targetFiles[job]], refresh_interval: interval }] })),
  };
  // JSON is valid YAML, so the config needs no YAML writer.
  const configFile = path.join(directory, "prometheus.yml");
  writeFileSync(configFile, JSON.stringify(config, null, 2));

  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(binary, [
    `--config.file=${configFile}`,
    `--storage.tsdb.path=${path.join(directory, "data")}`,
    `--web.listen-address=127.0.0.1:${port}`,
    "--log.level=warn",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (data: Buffer) => {
    stderr = (stderr + data.toString()).slice(-4000);
  });
  const stop = async () => {
    await stopChild(child);
    rmSync(directory, { recursive: true, force: true });
  };
  try {
    await waitForReady(url, child, () => stderr);
  } catch (error) {
    await stop();
    throw error;
  }

  const api = async (pathAndQuery: string, description: string): Promise<unknown> => {
    const response = await fetch(`${url}${pathAndQuery}`);
    const body = (await response.json()) as { status: string; data?: unknown; error?: string };
    if (body.status !== "success") throw new Error(`Prometheus rejected ${description}: ${body.error ?? response.status}`);
    return body.data;
  };
  return {
    url,
    targetFiles,
    setTargets(job, groups) {
      const file = targetFiles[job];
      if (file === undefined) throw new Error(`no scrape job ${job}; jobs: ${jobs.join(", ")}`);
      // Written aside and renamed, so Prometheus never reads a half-written file.
      writeFileSync(`${file}.tmp`, JSON.stringify(groups));
      renameSync(`${file}.tmp`, file);
    },
    async query(expr, time = new Date()) {
      const params = new URLSearchParams({ query: expr, time: String(time.getTime() / 1000) });
      const data = (await api(`/api/v1/query?${params.toString()}`, expr)) as { result: Series[] };
      return data.result;
    },
    async queryRange(expr, start, end, stepSeconds) {
      const params = new URLSearchParams({ query: expr, start: String(start.getTime() / 1000), end: String(end.getTime() / 1000), step: String(stepSeconds) });
      const data = (await api(`/api/v1/query_range?${params.toString()}`, expr)) as { result: Series[] };
      return data.result;
    },
    async labelValues(label, match) {
      const params = new URLSearchParams({ "match[]": match });
      return (await api(`/api/v1/label/${encodeURIComponent(label)}/values?${params.toString()}`, `values of ${label} on ${match}`)) as string[];
    },
    async waitForTargets(job, count, timeoutMs = 20_000) {
      const deadline = Date.now() + timeoutMs;
      let up = 0;
      while (Date.now() < deadline) {
        const data = (await api("/api/v1/targets?state=active", "the target list")) as { activeTargets: Array<{ labels: Record<string, string>; health: string }> };
        up = data.activeTargets.filter((target) => target.labels.job === job && target.health === "up").length;
        if (up >= count) return;
        await new Promise((resolve) => setTimeout(resolve, 250));
      }
      throw new Error(`Prometheus job ${job} has ${up} healthy targets, expected ${count}, after ${timeoutMs} ms`);
    },
    stop,
  };
}

async function waitForReady(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`prometheus exited with ${child.exitCode}: ${stderr()}`);
    try {
      const response = await fetch(`${url}/-/ready`);
      if (response.ok) return;
    } catch {
      // Not listening yet.
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`prometheus was not ready within 20 s: ${stderr()}`);
}

/** Sends SIGTERM, then SIGKILL after 10 s, and resolves once the process has exited. */
export async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
  await exited;
  clearTimeout(timer);
}
