/**
 * `spillway up` as a child process, the way a user runs it, with the gateway URL and each ready worker's
 * URL read from its JSON log lines. Workers listen on ports the kernel picks, and the "replica ready"
 * line is where the controller reports them.
 */
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";

import { stopChild } from "./prometheus.ts";

const cli = path.resolve(import.meta.dirname, "..", "..", "bin", "spillway.js");

/** A worker replica as the controller's log reports it. */
export interface WorkerEndpoint {
  replica: string;
  pool: string;
  /** Base URL such as `http://127.0.0.1:41234`; its `/metrics` is the worker's own. */
  url: string;
}

export interface SpillwayUp {
  url: string;
  /** Ready workers by replica id. */
  workers: Map<string, WorkerEndpoint>;
  /** The last log lines, for failure messages. */
  recentLogs(): string;
  stop(): Promise<void>;
}

interface LogLine {
  msg?: string;
  url?: string;
  replica?: string;
  pool?: string;
}

/**
 * Starts `spillway up --config <file>` and resolves once the gateway listens. `onWorkersChange` runs
 * whenever a replica becomes ready or stops.
 */
export async function startSpillwayUp(options: {
  configFile: string;
  stateFile: string;
  env: NodeJS.ProcessEnv;
  onWorkersChange?: (workers: WorkerEndpoint[]) => void;
}): Promise<SpillwayUp> {
  const child = spawn(process.execPath, [cli, "up", "--config", options.configFile, "--state-file", options.stateFile], {
    env: { ...process.env, SPILLWAY_LOG_LEVEL: "info", ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const workers = new Map<string, WorkerEndpoint>();
  const lines: string[] = [];
  const remember = (line: string) => {
    lines.push(line);
    if (lines.length > 40) lines.shift();
  };
  child.stderr.on("data", (data: Buffer) => remember(data.toString().trimEnd()));

  const url = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (text) => {
      remember(text);
      let entry: LogLine;
      try {
        entry = JSON.parse(text) as LogLine;
      } catch {
        return;
      }
      if (entry.msg === "gateway listening" && entry.url !== undefined) resolve(entry.url);
      if (entry.replica === undefined || entry.pool === undefined) return;
      if (entry.msg === "replica ready" && entry.url !== undefined) {
        workers.set(entry.replica, { replica: entry.replica, pool: entry.pool, url: entry.url });
        options.onWorkersChange?.([...workers.values()]);
      }
      if (entry.msg === "replica stopped" && workers.delete(entry.replica)) options.onWorkersChange?.([...workers.values()]);
    });
    child.once("exit", (code) => reject(new Error(`spillway up exited with ${code} before the gateway listened:\n${lines.join("\n")}`)));
  });

  return {
    url,
    workers,
    recentLogs: () => lines.join("\n"),
    // SIGTERM drains the replicas and stops the worker processes before spillway up exits.
    stop: () => stopChild(child),
  };
}
