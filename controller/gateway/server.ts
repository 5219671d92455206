import express from "express";
import type { Registry } from "prom-client";

import { assignRequestId, errorBoundary, jsonBody, unknownUrl } from "../../api/http.ts";
import type { KeyRing } from "./auth.ts";
import { serveChat } from "./chat.ts";
import type { GatewayContext } from "./context.ts";
import { modelNames } from "./routing.ts";

export interface GatewayAppOptions {
  ctx: GatewayContext;
  keys: KeyRing;
  registry: Registry;
  /** Handler for `GET /v1/spillway/usage`, behind the admin key. */
  usage: express.RequestHandler;
  /** Whether the controller is shutting down; readiness turns false first. */
  draining: () => boolean;
  /** False until the runtime has listed its replicas; until then a load balancer should not send traffic. */
  started?: () => boolean;
  /** The control loop's view of a pool (pressure, last changes), when a control loop runs. */
  controlStatus?: (pool: string) => { pressure: number; lastStepAt: number | undefined; lastScaleAt: number | undefined };
}

/** Builds the gateway's express app: the OpenAI routes, Spillway's own endpoints, probes and metrics. */
export function createGatewayApp(options: GatewayAppOptions): express.Express {
  const { ctx, keys } = options;
  const app = express();
  app.disable("x-powered-by");
  app.set("etag", false);
  app.use(assignRequestId);

  app.get("/healthz", (_req, res) => {
    res.json({ status: "ok" });
  });
  app.get("/readyz", (_req, res) => {
    const state = options.draining() ? "draining" : options.started?.() === false ? "starting" : "ready";
    res.status(state === "ready" ? 200 : 503).json({ ready: state === "ready", state });
  });
  app.get("/metrics", async (_req, res) => {
    res.type(options.registry.contentType).send(await options.registry.metrics());
  });

  app.get("/v1/models", (req, res) => {
    keys.tenantOf(req);
    const created = Math.floor(Date.now() / 1000);
    res.json({ object: "list", data: modelNames(ctx.config).map((id) => ({ id, object: "model", created, owned_by: "spillway" })) });
  });
  app.post("/v1/chat/completions", jsonBody(ctx.config.gateway.maxBodyBytes), async (req, res) => {
    if (options.draining()) {
      res.set("retry-after", "1");
      res.status(503).json({ error: { message: "The gateway is shutting down. Retry shortly.", type: "server_error", param: null, code: "gateway_draining" } });
      return;
    }
    const tenant = keys.tenantOf(req);
    await serveChat(ctx, req, res, tenant);
  });

  app.get("/v1/spillway/usage", (req, res, next) => {
    keys.requireAdmin(req);
    next();
  }, options.usage);
  app.get("/v1/spillway/status", (req, res) => {
    keys.requireAdmin(req);
    res.json({
      object: "spillway.status",
      pools: ctx.config.pools.map((pool) => ({
        name: pool.name,
        aliases: pool.aliases,
        ladder: pool.variants.map((variant) => variant.quant),
        queueDepth: ctx.queues.length(pool.name),
        replicas: ctx.table
          .forPool(pool.name)
          .map(({ id, state, quant, rung, slots, outstanding, swapping }) => ({ id, state, quant, rung, slots, outstanding, swapping: swapping === true })),
        control: options.controlStatus?.(pool.name) ?? null,
      })),
      overflow: { enabled: ctx.config.overflow.enabled, available: ctx.gemini?.available() ?? false },
    });
  });

  app.use(unknownUrl);
  app.use(errorBoundary(ctx.logger, ctx.config.gateway.maxBodyBytes));
  return app;
}
