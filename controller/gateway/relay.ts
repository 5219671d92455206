import type { Response } from "express";
import type { Logger } from "pino";

import type { ChatRequest } from "../../api/chat-request.ts";
import type { ApiErrorBody } from "../../api/errors.ts";
import { SseWriter } from "../../api/sse.ts";
import type { PoolConfig } from "../config/schema.ts";
import { BackendError, type BackendReply, type ChatCompletionChunk, type Usage } from "../backends/types.ts";
import type { UsageOutcome } from "../metering/types.ts";
import type { OverflowReason } from "./admission.ts";
import type { GatewayContext } from "./context.ts";
import { estimatePromptTokens, estimateTextTokens } from "./estimate.ts";
import type { SlotLease } from "./pool-queue.ts";
import type { Replica } from "./replicas.ts";

/** The backend that produced a reply, with what must be released or recorded once it is relayed. */
export type ServedBy =
  | { backend: "local"; reply: BackendReply; replica: Replica; lease: SlotLease; slotTaken: number }
  | { backend: "gemini"; reply: BackendReply; reason: OverflowReason };

interface RelayScope {
  ctx: GatewayContext;
  request: ChatRequest;
  pool: PoolConfig;
  tenant: string;
  requestId: string;
  signal: AbortSignal;
  logger: Logger;
  res: Response;
  started: number;
  served: ServedBy;
}

/** Token counts for billing: exact from the backend's usage, estimated only for a cut stream. */
interface Counted {
  promptTokens: number;
  cachedPromptTokens: number;
  completionTokens: number;
}

/**
 * Sends a backend's reply to the client and meters it. A stream always carries usage from the backend;
 * the usage chunk is passed on only when the client requested it, so what is billed is what a client
 * that asks for usage sees.
 */
export async function relayReply(scope: RelayScope): Promise<void> {
  const { served } = scope;
  const quant = served.backend === "local" ? (served.reply.quant ?? served.replica.quant) : null;
  const headers = {
    "x-spillway-backend": served.backend,
    "x-spillway-pool": scope.pool.name,
    "x-spillway-quant": quant ?? "none",
  };
  let outcome: UsageOutcome = "ok";
  let counted: Counted | undefined;
  let status = 200;
  try {
    if (served.reply.kind === "completion") {
      const completion = { ...served.reply.completion, model: scope.request.model };
      counted = fromUsage(completion.usage);
      scope.res.set(headers).json(completion);
      recordFirstToken(scope);
    } else {
      const result = await relayStream(scope, served.reply, headers);
      outcome = result.outcome;
      counted = result.counted;
      status = result.outcome === "backend_error" ? 502 : 200;
    }
  } finally {
    finish(scope, quant, counted, outcome, status);
  }
}

function finish(scope: RelayScope, quant: string | null, counted: Counted | undefined, outcome: UsageOutcome, status: number): void {
  const { ctx, served, pool } = scope;
  const seconds = (performance.now() - scope.started) / 1000;
  if (served.backend === "local") {
    served.lease.release();
    ctx.serviceTimes.observe(pool.name, (performance.now() - served.slotTaken) / 1000);
  }
  ctx.telemetry.finished(pool.name, served.backend, status, seconds);
  if (counted === undefined) return;
  ctx.metering.record({
    at: Date.now(),
    requestId: scope.requestId,
    tenant: scope.tenant,
    pool: pool.name,
    backend: served.backend,
    quant,
    promptTokens: counted.promptTokens,
    cachedPromptTokens: counted.cachedPromptTokens,
    completionTokens: counted.completionTokens,
    outcome,
  });
}

function recordFirstToken(scope: RelayScope): void {
  scope.ctx.telemetry.firstToken(scope.pool.name, scope.served.backend, (performance.now() - scope.started) / 1000);
}

function fromUsage(usage: Usage): Counted {
  return {
    promptTokens: usage.prompt_tokens,
    cachedPromptTokens: usage.prompt_tokens_details?.cached_tokens ?? 0,
    completionTokens: usage.completion_tokens,
  };
}

async function relayStream(
  scope: RelayScope,
  reply: Extract<BackendReply, { kind: "stream" }>,
  headers: Record<string, string>,
): Promise<{ outcome: UsageOutcome; counted: Counted }> {
  const writer = new SseWriter(scope.res);
  writer.open({ ...headers, "x-request-id": scope.requestId });
  recordFirstToken(scope);
  const includeUsage = scope.request.includeUsage;
  let usage: Usage | undefined;
  let generatedText = "";
  let outputChunks = 0;

  const forward = (chunk: ChatCompletionChunk) => {
    if (chunk.choices.length === 0 && chunk.usage != null) {
      usage = chunk.usage;
      if (includeUsage) writer.send({ ...chunk, model: scope.request.model });
      return;
    }
    for (const choice of chunk.choices) {
      const hasOutput = (choice.delta.content ?? "") !== "" || (choice.delta.tool_calls?.length ?? 0) > 0;
      if (hasOutput) outputChunks += 1;
      generatedText += choice.delta.content ?? "";
      for (const call of choice.delta.tool_calls ?? []) generatedText += call.function?.arguments ?? "";
    }
    const { usage: _usage, ...rest } = chunk;
    writer.send(includeUsage ? { ...rest, model: scope.request.model, usage: null } : { ...rest, model: scope.request.model });
  };

  let outcome: UsageOutcome = "ok";
  try {
    forward(reply.first);
    for await (const chunk of reply.rest) forward(chunk);
    writer.finish();
  } catch (error) {
    outcome = scope.signal.aborted ? "client_abort" : "backend_error";
    if (outcome === "backend_error") {
      scope.ctx.telemetry.upstreamError(scope.served.backend, error instanceof BackendError ? error.status : 502);
      scope.logger.warn({ err: error, backend: scope.served.backend }, "backend failed mid-stream");
      writer.fail(midStreamBody(error));
    } else {
      writer.end();
    }
  }
  if (usage !== undefined) return { outcome, counted: fromUsage(usage) };
  // Cut before the usage chunk: bill what was produced, with the backend's prompt count when it gave one.
  // A worker sends about one chunk per token; Gemini's chunks are larger, so its text length is used.
  const completionTokens = scope.served.backend === "local" ? outputChunks : estimateTextTokens(generatedText);
  return {
    outcome,
    counted: {
      promptTokens: reply.promptTokens ?? estimatePromptTokens(scope.request.raw),
      cachedPromptTokens: 0,
      completionTokens,
    },
  };
}

function midStreamBody(error: unknown): ApiErrorBody {
  if (error instanceof BackendError) return error.body;
  return { error: { message: "The backend failed while streaming; the reply is incomplete. Retry the request.", type: "server_error", param: null, code: "backend_error" } };
}
