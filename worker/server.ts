import express from "express";
import type { Logger } from "pino";

import type { components } from "../api/generated.ts";
import { assignRequestId, errorBoundary, jsonBody, unknownUrl } from "../api/http.ts";
import { adminRoutes, type AdminKey } from "./admin.ts";
import { handleChatCompletion } from "./completions.ts";
import type { DecodeRates } from "./decode-rates.ts";
import { observeWorker, type WorkerMetrics } from "./metrics.ts";
import { acceptsRequests, notReady, readinessState, type WorkerState } from "./state.ts";

type Readiness = components["schemas"]["ReadinessResponse"];

export interface WorkerAppOptions {
  state: WorkerState;
  metrics: WorkerMetrics;
  decodeRates: DecodeRates;
  logger: Logger;
  maxBodyBytes: number;
  adminKey: AdminKey;
}

/** Builds the worker's express app: the OpenAI routes, probes, metrics and admin routes, with one error boundary. */
export function createWorkerApp(options: WorkerAppOptions): express.Express {
  const { state, metrics, decodeRates, logger } = options;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);

  app.use(assignRequestId);

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });

  app.get("/readyz", (_req, res) => {
    const readiness = readinessState(state);
    const variants = state.variants;
    const body: Readiness = {
      ready: readiness === "ready",
      state: readiness,
      model: state.modelId,
      quant: variants?.quant ?? null,
      slots: variants?.router.slots ?? 0,
      swapping: variants?.swapping ?? false,
      ladder: variants?.ladder ?? state.ladder,
      decodeTokensPerSecond: decodeRates.snapshot(),
    };
    res.status(readiness === "ready" ? 200 : 503).json(body);
  });

  app.get("/metrics", async (_req, res) => {
    if (state.variants !== undefined) observeWorker(metrics, state.variants.router, decodeRates);
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });

  app.get("/v1/models", (_req, res) => {
    const created = Math.floor(Date.now() / 1000);
    res.json({ object: "list", data: [{ id: state.modelId, object: "model", created, owned_by: "spillway" }] });
  });

  app.post("/v1/chat/completions", jsonBody(options.maxBodyBytes), async (req, res) => {
    res.on("finish", () => metrics.requests.inc({ code: String(res.statusCode) }));
    if (!acceptsRequests(state) || state.deps === undefined) throw notReady(readinessState(state));
    await handleChatCompletion(state.deps, req, res);
  });

  app.use(adminRoutes(state, options.adminKey, options.maxBodyBytes));
  app.use(unknownUrl);
  app.use(errorBoundary(logger, options.maxBodyBytes));
  return app;
}
