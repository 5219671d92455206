import express, { type NextFunction, type Request, type Response } from "express";
import type { Logger } from "pino";

import { ApiError, internalError } from "../api/errors.ts";
import { requestIdFrom } from "../api/request-id.ts";
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

  app.use((req, res, next) => {
    const requestId = requestIdFrom(req.headers["x-request-id"]);
    res.locals.requestId = requestId;
    res.setHeader("x-request-id", requestId);
    next();
  });

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

  // Any content type is parsed as JSON: clients that forget the header still get a precise field error.
  const parseJson = express.json({ limit: options.maxBodyBytes, type: () => true, strict: false });
  app.post("/v1/chat/completions", parseJson, async (req, res) => {
    res.on("finish", () => metrics.requests.inc({ code: String(res.statusCode) }));
    if (state.phase !== "ready" || state.deps === undefined) throw notReady(state.phase);
    await handleChatCompletion(state.deps, req, res);
  });

  app.use((req, _res, next) => {
    next(new ApiError(404, `Unknown request URL: ${req.method} ${req.path}.`, { code: "unknown_url" }));
  });
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

interface BodyParserError {
  type: string;
  status?: number;
}

function isBodyParserError(error: unknown): error is BodyParserError {
  return typeof error === "object" && error !== null && typeof (error as BodyParserError).type === "string" && "status" in error;
}

/** Turns any error into an OpenAI error body. Unexpected errors are logged, and their response carries no internals. */
function errorBoundary(logger: Logger, maxBodyBytes: number) {
  return (error: unknown, _req: Request, res: Response, _next: NextFunction) => {
    const requestId = res.locals.requestId as string;
    const apiError = toApiError(error, requestId, maxBodyBytes);
    if (apiError.status >= 500) logger.error({ requestId, err: error }, "request failed");
    else logger.debug({ requestId, status: apiError.status, param: apiError.param }, apiError.message);

    if (res.headersSent) {
      res.end();
      return;
    }
    res.status(apiError.status).set(apiError.headers).json(apiError.toBody());
  };
}

function toApiError(error: unknown, requestId: string, maxBodyBytes: number): ApiError {
  if (error instanceof ApiError) return error;
  if (isBodyParserError(error)) {
    if (error.type === "entity.parse.failed") {
      return new ApiError(400, "The request body is not valid JSON. Send a JSON object with 'model' and 'messages'.", {
        code: "invalid_json",
      });
    }
    if (error.type === "entity.too.large") {
      return new ApiError(413, `The request body is larger than the limit of ${maxBodyBytes} bytes. Shorten the messages.`, {
        code: "request_too_large",
      });
    }
    if (error.type === "encoding.unsupported" || error.type === "charset.unsupported") {
      return new ApiError(415, "The request body's encoding is not supported. Send UTF-8 JSON.", { code: "unsupported_encoding" });
    }
  }
  return internalError(requestId, error);
}
