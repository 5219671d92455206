import express from "express";
import type { Logger } from "pino";

import { ApiError } from "../api/errors.ts";
import { assignRequestId, errorBoundary, jsonBody, unknownUrl } from "../api/http.ts";
import { handleChatCompletion, type CompletionDeps } from "./completions.ts";
import { observeEngine, type WorkerMetrics } from "./metrics.ts";

export type WorkerPhase = "loading" | "ready" | "draining";

/** Mutable state the HTTP layer reads: the phase, and the loaded model once there is one. */
export interface WorkerState {
  phase: WorkerPhase;
  modelId: string;
  deps: CompletionDeps | undefined;
}

export interface WorkerAppOptions {
  state: WorkerState;
  metrics: WorkerMetrics;
  logger: Logger;
  maxBodyBytes: number;
}

/** Builds the worker's express app: the OpenAI routes, probes and metrics, with one error boundary. */
export function createWorkerApp(options: WorkerAppOptions): express.Express {
  const { state, metrics, logger } = options;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  app.use(assignRequestId);

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });

  app.get("/readyz", (_req, res) => {
    const ready = state.phase === "ready";
    res.status(ready ? 200 : 503).json({
      ready,
      state: state.phase,
      model: state.modelId,
      quant: state.deps?.engine.quant ?? null,
      slots: state.deps?.engine.slots ?? 0,
    });
  });

  app.get("/metrics", async (_req, res) => {
    if (state.deps !== undefined) observeEngine(metrics, state.deps.engine);
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.get("/v1/models", (_req, res) => {
    const created = Math.floor(Date.now() / 1000);
    res.json({ object: "list", data: [{ id: state.modelId, object: "model", created, owned_by: "spillway" }] });
  });

  app.post("/v1/chat/completions", jsonBody(options.maxBodyBytes), async (req, res) => {
    res.on("finish", () => metrics.requests.inc({ code: String(res.statusCode) }));
    if (state.phase !== "ready" || state.deps === undefined) throw notReady(state.phase);
    await handleChatCompletion(state.deps, req, res);
  });

  app.use(unknownUrl);
  app.use(errorBoundary(logger, options.maxBodyBytes));
  return app;
}

function notReady(phase: WorkerPhase): ApiError {
  const reason = phase === "loading" ? "is still loading its model" : "is shutting down";
  return new ApiError(503, `This worker ${reason}. Retry on another replica or in a few seconds.`, {
    type: "server_error",
    code: "worker_not_ready",
    headers: { "retry-after": "1" },
  });
}
