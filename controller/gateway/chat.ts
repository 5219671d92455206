import type { Request, Response } from "express";
import type { Logger } from "pino";

import { parseChatRequest, type ChatRequest } from "../../api/chat-request.ts";
import { ApiError } from "../../api/errors.ts";
import type { PoolConfig } from "../config/schema.ts";
import { BackendError, type BackendCall, type BackendName, type BackendReply } from "../backends/types.ts";
import { decideAdmission, type AdmissionDecision, type OverflowReason } from "./admission.ts";
import type { GatewayContext } from "./context.ts";
import { QueueTimeoutError, type SlotLease } from "./pool-queue.ts";
import { relayReply, type ServedBy } from "./relay.ts";
import { estimatePromptTokens } from "./estimate.ts";
import { floorRung, requestClassOf, resolvePool } from "./routing.ts";

/** The destination admission chose for a request. */
type Target = { kind: "local"; lease: SlotLease } | { kind: "overflow"; reason: OverflowReason };

interface RequestScope {
  ctx: GatewayContext;
  request: ChatRequest;
  pool: PoolConfig;
  floor: number;
  tenant: string;
  requestId: string;
  signal: AbortSignal;
  logger: Logger;
  /** The backend last tried, so an error reply is counted against it; unset while no backend was tried. */
  backend?: BackendName;
}

/**
 * Serves one `POST /v1/chat/completions` at the gateway: validate, pick the pool, admit (local slot,
 * queue or overflow), send with one fallback before the first byte, then relay and meter the reply.
 */
export async function serveChat(ctx: GatewayContext, req: Request, res: Response, tenant: string): Promise<void> {
  const started = performance.now();
  const requestId = res.locals.requestId as string;
  const request = parseChatRequest(req.body);
  const pool = resolvePool(ctx.config, request.raw);
  const floor = floorRung(pool, requestClassOf(request.raw));

  const abort = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) abort.abort(new Error("client disconnected"));
  };
  res.on("close", onClose);
  const logger = ctx.logger.child({ requestId, pool: pool.name });
  const scope: RequestScope = { ctx, request, pool, floor, tenant, requestId, signal: abort.signal, logger };
  let relaying = false;
  try {
    const target = await admit(scope);
    const served = await send(scope, target);
    relaying = true;
    await relayReply({ ...scope, res, started, served });
  } catch (error) {
    // The relay counts the replies it sends; an error reply before it is counted here, also when the
    // gateway rejected the request itself (backend "gateway").
    if (!relaying && error instanceof ApiError && !abort.signal.aborted) {
      ctx.telemetry.finished(pool.name, scope.backend ?? "gateway", error.status, (performance.now() - started) / 1000);
    }
    throw error;
  } finally {
    res.off("close", onClose);
  }
}

async function admit(scope: RequestScope): Promise<Target> {
  const { ctx, pool } = scope;
  const decision = decideAdmission({
    replicas: ctx.table.forPool(pool.name),
    floorRung: scope.floor,
    queueLength: ctx.queues.length(pool.name),
    queueCapacity: pool.queueSize,
    serviceSeconds: ctx.serviceTimes.get(pool.name),
    sloSeconds: pool.slo.timeToFirstTokenSeconds,
    promptTokens: estimatePromptTokens(scope.request.raw),
    contextSize: pool.contextSize,
    overflowAvailable: overflowAvailable(ctx),
    budget: ctx.metering.budgetStatus(scope.tenant),
    canStartReplica: ctx.runtime !== undefined && ctx.table.forPool(pool.name).length === 0 && pool.replicas.max > 0,
  });
  scope.logger.debug({ decision }, "admission");
  return followDecision(scope, decision);
}

async function followDecision(scope: RequestScope, decision: AdmissionDecision): Promise<Target> {
  const { ctx, pool } = scope;
  if ((decision.action === "queue" || decision.action === "overflow") && decision.startReplica) {
    ctx.runtime?.requestReplica(pool.name);
  }
  switch (decision.action) {
    case "reject":
      throw new ApiError(decision.status, decision.message, {
        code: decision.code,
        headers: decision.retryAfterSeconds === undefined ? {} : { "retry-after": String(decision.retryAfterSeconds) },
      });
    case "overflow":
      return { kind: "overflow", reason: decision.reason };
    case "local": {
      const lease = ctx.queues.tryLease(pool.name, scope.floor);
      if (lease !== undefined) return { kind: "local", lease };
      return waitInQueue(scope, false);
    }
    case "queue":
      return waitInQueue(scope, decision.startReplica);
  }
}

/**
 * Waits for a local slot. With overflow available the wait is bounded by half the SLO, after which the
 * request overflows as saturated; without it, the request waits longer (a cold replica may be loading).
 */
async function waitInQueue(scope: RequestScope, coldStart: boolean): Promise<Target> {
  const { ctx, pool } = scope;
  const canOverflow = overflowAvailable(ctx) && ctx.metering.budgetStatus(scope.tenant) === "ok";
  // With overflow, half the SLO is left for Gemini's own time to first token after the wait gives up.
  let timeoutSeconds = coldStart ? 300 : 60;
  if (canOverflow) timeoutSeconds = pool.slo.timeToFirstTokenSeconds / 2;
  const queuedAt = performance.now();
  try {
    const lease = await ctx.queues.wait(pool.name, scope.floor, timeoutSeconds, scope.signal);
    ctx.telemetry.queueWait(pool.name, (performance.now() - queuedAt) / 1000);
    return { kind: "local", lease };
  } catch (error) {
    ctx.telemetry.queueWait(pool.name, (performance.now() - queuedAt) / 1000);
    if (!(error instanceof QueueTimeoutError)) throw error;
    if (canOverflow && overflowAvailable(ctx)) return { kind: "overflow", reason: coldStart ? "cold_start" : "saturated" };
    throw new ApiError(429, `No local slot freed within ${timeoutSeconds} s and overflow is unavailable. Retry later.`, {
      code: "rate_limit_exceeded",
      headers: { "retry-after": String(Math.min(60, Math.ceil(ctx.serviceTimes.get(pool.name)) + 1)) },
    });
  }
}

/** Sends to the target; a local failure before the first byte retries once on another replica, then overflows. */
async function send(scope: RequestScope, first: Target): Promise<ServedBy> {
  const { ctx } = scope;
  const call: BackendCall = { request: scope.request.raw, requestId: scope.requestId, signal: scope.signal };
  const tried = new Set<string>();
  let target = first;
  for (;;) {
    if (target.kind === "overflow") return sendToGemini(scope, call, target.reason);
    const replica = ctx.table.get(target.lease.replicaId);
    if (replica === undefined) {
      target.lease.release();
      target = nextTarget(scope, tried, "local_error");
      continue;
    }
    const slotTaken = performance.now();
    scope.backend = "local";
    try {
      const reply = await ctx.worker.send(call, replica);
      return { backend: "local", reply, replica, lease: target.lease, slotTaken };
    } catch (error) {
      target.lease.release();
      // A client that hung up is not a replica failure: no retry, no overflow, no upstream error count.
      if (scope.signal.aborted) throw error;
      if (!(error instanceof BackendError)) throw error;
      // The worker validates what the gateway cannot (a schema its grammar cannot enforce, say): that is the
      // client's error, returned as it is, and no sign of a failing replica.
      if (isClientError(error.status)) throw toApiError(error);
      ctx.telemetry.upstreamError("local", error.status);
      scope.logger.warn({ replica: replica.id, status: error.status, code: error.body.error.code }, "replica failed before the first byte");
      if (error.body.error.code === "context_length_exceeded") {
        if (!canOverflow(scope)) throw toApiError(error);
        target = { kind: "overflow", reason: "context_length" };
        continue;
      }
      if (!error.retryable) throw toApiError(error);
      tried.add(replica.id);
      target = nextTarget(scope, tried, "local_error", error);
    }
  }
}

/** Statuses with which a worker rejects the request itself rather than failing. */
function isClientError(status: number): boolean {
  return status === 400 || status === 413 || status === 422;
}

function nextTarget(scope: RequestScope, tried: ReadonlySet<string>, reason: OverflowReason, error?: BackendError): Target {
  if (tried.size < 2) {
    const lease = scope.ctx.queues.tryLease(scope.pool.name, scope.floor, tried);
    if (lease !== undefined) return { kind: "local", lease };
  }
  if (canOverflow(scope)) return { kind: "overflow", reason };
  if (error !== undefined) throw toApiError(error);
  throw new ApiError(503, "No replica of this pool could take the request. Retry shortly.", { code: "local_error", headers: { "retry-after": "1" } });
}

async function sendToGemini(scope: RequestScope, call: BackendCall, reason: OverflowReason): Promise<ServedBy> {
  const gemini = scope.ctx.gemini;
  scope.backend = "gemini";
  if (gemini === undefined) throw new ApiError(503, "Overflow to Gemini is not configured.", { code: "overflow_unavailable" });
  scope.ctx.telemetry.overflow(scope.pool.name, reason);
  scope.logger.debug({ reason }, "overflow to gemini");
  let reply: BackendReply;
  try {
    reply = await gemini.send(call);
  } catch (error) {
    if (!(error instanceof BackendError)) throw error;
    scope.ctx.telemetry.upstreamError("gemini", error.status);
    scope.logger.warn({ status: error.status, code: error.body.error.code, reason }, "overflow to gemini failed");
    throw toApiError(error);
  }
  return { backend: "gemini", reply, reason };
}

function overflowAvailable(ctx: GatewayContext): boolean {
  return ctx.config.overflow.enabled && ctx.gemini !== undefined && ctx.gemini.available();
}

function canOverflow(scope: RequestScope): boolean {
  return overflowAvailable(scope.ctx) && scope.ctx.metering.budgetStatus(scope.tenant) === "ok";
}

function toApiError(error: BackendError): ApiError {
  const { message, type, param, code } = error.body.error;
  const headers: Record<string, string> = {};
  if (error.retryAfterSeconds !== undefined) headers["retry-after"] = String(Math.ceil(error.retryAfterSeconds));
  return new ApiError(error.status, message, { type, param, code, headers, cause: error });
}
