import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

import { resolveChatWrapper } from "node-llama-cpp";
import type { Logger } from "pino";

import { WorkerShutdownError } from "./completions.ts";
import { Engine, type EngineOptions } from "./engine.ts";
import { WorkerMetrics } from "./metrics.ts";
import { createWorkerApp, type WorkerState } from "./server.ts";
import { StructuredOutputs } from "./structured-output.ts";

export interface WorkerOptions extends EngineOptions {
  host: string;
  port: number;
  /** The model id clients send in `model`. */
  name: string;
  maxBodyBytes: number;
  /** How long shutdown waits for in-flight requests before aborting them. */
  drainSeconds: number;
}

export interface RunningWorker {
  /** The address the server listens on; with port 0 the kernel picks the port. */
  url: string;
  /** Resolves once the model is loaded and the worker reports ready. */
  ready: Promise<void>;
  /** Drains and stops: readiness drops, in-flight requests finish or are aborted, the model is disposed. */
  stop(): Promise<void>;
}

/**
 * Starts a worker: the HTTP server first, so the liveness probe responds while the model loads, then the model.
 */
export async function startWorker(options: WorkerOptions, logger: Logger): Promise<RunningWorker> {
  const metrics = new WorkerMetrics();
  const state: WorkerState = { phase: "loading", modelId: options.name, deps: undefined };
  const inFlight = new Set<AbortController>();
  const app = createWorkerApp({ state, metrics, logger, maxBodyBytes: options.maxBodyBytes });

  const server: Server = app.listen(options.port, options.host);
  await once(server, "listening");
  const address = server.address() as AddressInfo;
  const url = `http://${formatHost(address.address)}:${address.port}`;
  logger.info({ url, model: options.name }, "worker listening");

  let engine: Engine | undefined;
  const ready = (async () => {
    engine = await Engine.load(options, logger);
    metrics.modelLoadSeconds.set(engine.loadSeconds);
    metrics.modelInfo.set({ model: options.name, quant: engine.quant ?? "unknown" }, 1);
    const chatWrapper = resolveChatWrapper(engine.model);
    state.deps = { modelId: options.name, engine, chatWrapper, structuredOutputs: new StructuredOutputs(engine.llama), metrics, inFlight, logger };
    if (state.phase === "loading") state.phase = "ready";
    logger.info({ model: options.name, quant: engine.quant, chatWrapper: chatWrapper.wrapperName }, "worker ready");
  })();

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= drainAndStop({ server, state, inFlight, logger, drainSeconds: options.drainSeconds, ready, engine: () => engine });
    return stopping;
  };
  return { url, ready, stop };
}

interface DrainTarget {
  server: Server;
  state: WorkerState;
  inFlight: Set<AbortController>;
  logger: Logger;
  drainSeconds: number;
  ready: Promise<void>;
  engine: () => Engine | undefined;
}

async function drainAndStop(target: DrainTarget): Promise<void> {
  const { server, state, inFlight, logger } = target;
  // The listener stays open while draining. Probes and new requests get a 503, which a gateway retries
  // on another replica, rather than a refused connection.
  state.phase = "draining";
  logger.info({ inFlight: inFlight.size, drainSeconds: target.drainSeconds }, "draining");

  const deadline = Date.now() + target.drainSeconds * 1000;
  while (inFlight.size > 0 && Date.now() < deadline) await delay(50);
  if (inFlight.size > 0) {
    logger.warn({ aborted: inFlight.size }, "drain timed out; aborting the remaining requests");
    for (const controller of inFlight) controller.abort(new WorkerShutdownError());
  }
  target.engine()?.rejectWaiting(new WorkerShutdownError());
  const abortDeadline = Date.now() + 5000;
  while (inFlight.size > 0 && Date.now() < abortDeadline) await delay(20);

  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
  await target.ready.catch(() => undefined);
  await target.engine()?.dispose();
  logger.info("worker stopped");
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

function formatHost(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}
