import { once } from "node:events";
import type { Server } from "node:http";
import type { AddressInfo } from "node:net";

import type { Logger } from "pino";

import { WorkerShutdownError } from "./completions.ts";
import { DecodeRates } from "./decode-rates.ts";
import type { EngineOptions, VariantSpec } from "./engine.ts";
import { WorkerMetrics } from "./metrics.ts";
import { createWorkerApp } from "./server.ts";
import type { WorkerState } from "./state.ts";
import { StructuredOutputs } from "./structured-output.ts";
import { VariantManager, type SwapModeSetting } from "./variants.ts";

export interface WorkerOptions extends EngineOptions {
  /** The model of a one-variant worker: a local path or a node-llama-cpp URI. Set this or `variants`. */
  model?: string;
  /** The quantization ladder, highest quality first, each with its quant named. Set this or `model`. */
  variants?: readonly VariantSpec[];
  /** The quantization loaded at start; default the first rung. */
  startVariant?: string;
  /** Whether a swap may load the new variant beside the old one; default `auto`, decided from free memory. */
  swapMode?: SwapModeSetting;
  /** The environment variable holding the admin key; default `SPILLWAY_ADMIN_KEY`. */
  adminKeyEnv?: string;
  host: string;
  port: number;
  /** The model id clients send in `model`. */
  name: string;
  /** Requests that may wait for a slot before new ones get 429. */
  maxQueue: number;
  maxBodyBytes: number;
  /** How long shutdown waits for in-flight requests before aborting them. */
  drainSeconds: number;
}

export interface RunningWorker {
  /** The address the server listens on; with port 0 the kernel picks the port. */
  url: string;
  /** Resolves once the model is loaded and the worker reports ready. */
  ready: Promise<void>;
  /** Drains and stops: readiness drops, in-flight requests finish or are aborted, the models are disposed. */
  stop(): Promise<void>;
}

export const defaultAdminKeyEnv = "SPILLWAY_ADMIN_KEY";

/**
 * Starts a worker: the HTTP server first, so the liveness probe responds while the model loads, then the model.
 */
export async function startWorker(options: WorkerOptions, logger: Logger): Promise<RunningWorker> {
  const ladder = ladderOf(options);
  const startIndex = startIndexOf(ladder, options.startVariant);
  const metrics = new WorkerMetrics();
  const decodeRates = new DecodeRates();
  const ladderQuants = ladder.flatMap((variant) => (variant.quant === undefined ? [] : [variant.quant]));
  const state: WorkerState = { phase: "loading", modelId: options.name, ladder: ladderQuants, variants: undefined, deps: undefined };
  const inFlight = new Set<AbortController>();
  const adminKeyEnv = options.adminKeyEnv ?? defaultAdminKeyEnv;
  const adminKey = { variable: adminKeyEnv, value: process.env[adminKeyEnv] || undefined };
  const app = createWorkerApp({ state, metrics, decodeRates, logger, maxBodyBytes: options.maxBodyBytes, adminKey });

  const server: Server = app.listen(options.port, options.host);
  await once(server, "listening");
  const address = server.address() as AddressInfo;
  const url = `http://${formatHost(address.address)}:${address.port}`;
  logger.info({ url, model: options.name, ladder: ladderQuants, adminKeySet: adminKey.value !== undefined }, "worker listening");

  const { slots, threads, contextSize, modelsDirectory, gpu } = options;
  const ready = (async () => {
    const variants = await VariantManager.start(
      { ladder, startIndex, engine: { slots, threads, contextSize, modelsDirectory, gpu }, maxQueue: options.maxQueue, swapMode: options.swapMode ?? "auto", modelId: options.name },
      metrics,
      logger,
    );
    state.variants = variants;
    const structuredOutputs = new StructuredOutputs(variants.llama);
    state.deps = { modelId: options.name, slots: variants.router, structuredOutputs, metrics, decodeRates, inFlight, logger };
    if (state.phase === "loading") state.phase = "ready";
    const chatWrapper = variants.router.serving?.chatWrapper.wrapperName;
    logger.info({ model: options.name, quant: variants.quant, ladder: variants.ladder, chatWrapper }, "worker ready");
  })();

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= drainAndStop({ server, state, inFlight, logger, drainSeconds: options.drainSeconds, ready });
    return stopping;
  };
  return { url, ready, stop };
}

/** Returns the ladder a worker serves: its `variants`, or the one `model`. */
function ladderOf(options: WorkerOptions): readonly VariantSpec[] {
  const { model, variants } = options;
  if (variants !== undefined && variants.length > 0) {
    if (model !== undefined) throw new Error("Set either model or variants, not both.");
    const unnamed = variants.find((variant) => variant.quant === undefined);
    if (unnamed !== undefined) throw new Error(`The variant ${unnamed.model} has no quant; every rung of a ladder needs one.`);
    return variants;
  }
  if (model === undefined) throw new Error("Set model or variants: the worker has nothing to serve.");
  return [{ model }];
}

function startIndexOf(ladder: readonly VariantSpec[], startVariant: string | undefined): number {
  if (startVariant === undefined) return 0;
  const index = ladder.findIndex((variant) => variant.quant === startVariant);
  if (index < 0) throw new Error(`The start variant ${startVariant} is not on the ladder.`);
  return index;
}

interface DrainTarget {
  server: Server;
  state: WorkerState;
  inFlight: Set<AbortController>;
  logger: Logger;
  drainSeconds: number;
  ready: Promise<void>;
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
  state.variants?.router.rejectRequests(new WorkerShutdownError());
  const abortDeadline = Date.now() + 5000;
  while (inFlight.size > 0 && Date.now() < abortDeadline) await delay(20);

  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  server.closeAllConnections();
  await closed;
  await target.ready.catch(() => undefined);
  await state.variants?.close();
  logger.info("worker stopped");
}

function delay(milliseconds: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, milliseconds));
}

function formatHost(address: string): string {
  return address.includes(":") ? `[${address}]` : address;
}
