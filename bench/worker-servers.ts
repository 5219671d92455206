import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";

import { pino } from "pino";

import { startWorker } from "../worker/run.ts";

export interface ServerOptions {
  modelPath: string;
  threads: number;
  /** Slots of the worker, `--parallel` of llama-server. */
  slots: number;
  /** Tokens of context per slot. */
  contextSize: number;
}

export interface RunningServer {
  url: string;
  /** The id requests send in `model`. */
  model: string;
  stop(): Promise<void>;
}

/** Starts the Spillway worker in this process on 127.0.0.1, on a port the kernel picks, and waits until it is ready. */
export async function startSpillwayWorker(options: ServerOptions): Promise<RunningServer> {
  const model = "bench";
  const worker = await startWorker(
    {
      model: options.modelPath,
      host: "127.0.0.1",
      port: 0,
      name: model,
      slots: options.slots,
      maxQueue: options.slots * 4,
      threads: options.threads,
      contextSize: options.contextSize,
      gpu: false,
      modelsDirectory: "/nonexistent",
      maxBodyBytes: 1024 * 1024,
      drainSeconds: 5,
    },
    pino({ level: "silent" }),
  );
  try {
    await worker.ready;
  } catch (error) {
    await worker.stop();
    throw error;
  }
  return { url: worker.url, model, stop: () => worker.stop() };
}

/**
 * Starts llama-server on 127.0.0.1 with a port it picks itself, and waits until `/health` reports the
 * model loaded. The total context is `slots × contextSize`, so each of its slots gets as many tokens as
 * a worker slot. Flash attention is "auto", as node-llama-cpp 3.21.1 sets it for the worker's context,
 * and both resolve it to enabled on CPU.
 */
export async function startLlamaServer(binary: string, options: ServerOptions): Promise<RunningServer> {
  const args = [
    "--model", options.modelPath,
    "--host", "127.0.0.1",
    "--port", "0",
    "--threads", String(options.threads),
    "--threads-batch", String(options.threads),
    "--parallel", String(options.slots),
    "--ctx-size", String(options.slots * options.contextSize),
    "--batch-size", String(Math.min(512, options.contextSize)),
    "--flash-attn", "auto",
    "--n-gpu-layers", "0",
    "--no-webui",
  ];
  const child = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  const killOnExit = () => child.kill("SIGKILL");
  process.on("exit", killOnExit);
  const stop = async () => {
    await stopChild(child);
    process.off("exit", killOnExit);
  };
  try {
    const url = await waitForListeningAddress(child);
    await waitForHealth(url, child);
    return { url, model: "bench", stop };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Reads llama-server's log until it prints the address it bound, keeping the tail for error messages. */
async function waitForListeningAddress(child: ChildProcess): Promise<string> {
  let log = "";
  const found = new Promise<string>((resolve, reject) => {
    const onData = (bytes: Buffer) => {
      log = (log + bytes.toString("utf8")).slice(-20_000);
      const match = /listening on (http:\/\/[^\s]+)/.exec(log);
      if (match?.[1] !== undefined) resolve(match[1].replace(/\/$/, ""));
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("error", reject);
    child.once("exit", (code, signal) => {
      reject(new Error(`llama-server exited (${signal ?? `code ${code}`}) before listening. Its log ended with:\n${log.slice(-3000)}`));
    });
  });
  const timeout = setTimeout(() => child.kill("SIGTERM"), 120_000);
  try {
    return await found;
  } finally {
    clearTimeout(timeout);
  }
}

async function waitForHealth(url: string, child: ChildProcess): Promise<void> {
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error("llama-server exited while loading the model");
    const status = await fetch(`${url}/health`).then((response) => response.status, () => 0);
    if (status === 200) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`llama-server at ${url} was not healthy within 120 s`);
}

/** Sends SIGTERM and waits for the exit, with SIGKILL after 10 s if the process is still running. */
async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timeout = setTimeout(() => child.kill("SIGKILL"), 10_000);
  try {
    await exited;
  } finally {
    clearTimeout(timeout);
  }
}
