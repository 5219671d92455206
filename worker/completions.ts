import type { Request, Response } from "express";
import type { Logger } from "pino";

import { parseChatRequest, type ChatRequest } from "../api/chat-request.ts";
import { ApiError, modelNotFound } from "../api/errors.ts";
import { SseWriter } from "../api/sse.ts";
import { ChunkStream, completionBody, ignoreOutput, newCompletionId } from "./chunks.ts";
import type { DecodeRates } from "./decode-rates.ts";
import type { Engine } from "./engine.ts";
import { generate, prepareChat, type Generation, type PreparedChat } from "./generate.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { Lease, SlotRouter } from "./slots.ts";
import type { StructuredOutputs } from "./structured-output.ts";

/** Dependencies of the chat completions handler. */
export interface CompletionDeps {
  modelId: string;
  slots: SlotRouter;
  structuredOutputs: StructuredOutputs;
  metrics: WorkerMetrics;
  decodeRates: DecodeRates;
  /** Tracks in-flight work so shutdown can wait for it and abort what outlasts the drain. */
  inFlight: Set<AbortController>;
  logger: Logger;
}

/** A request prepared for one variant. */
interface Preparation {
  engine: Engine;
  prepared: PreparedChat;
}

/** One admitted request on its slot. */
interface Admitted {
  request: ChatRequest;
  prepared: PreparedChat;
  lease: Lease;
  received: number;
  abort: AbortController;
}

/**
 * Serves `POST /v1/chat/completions`. Everything that can be rejected is checked before a slot is taken.
 * The stream opens only once a slot is held, so a full queue is still a plain 429.
 */
export async function handleChatCompletion(deps: CompletionDeps, req: Request, res: Response): Promise<void> {
  const received = performance.now();
  const requestId = res.locals.requestId as string;
  const logger = deps.logger.child({ requestId });
  const request = parseChatRequest(req.body);
  if (request.model !== deps.modelId) throw modelNotFound(request.model, [deps.modelId]);
  const early = await prepareEarly(deps, request);

  const abort = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) abort.abort(new Error("client disconnected"));
  };
  res.on("close", onClose);
  deps.inFlight.add(abort);
  try {
    const lease = await deps.slots.acquire(abort.signal);
    const slotTaken = performance.now();
    let generation: Generation | undefined;
    try {
      // A swap may have handed the slot to another variant than the one the request was checked against.
      const prepared = early?.engine === lease.engine ? early.prepared : await prepareFor(deps, request, lease.engine);
      generation = await respond(deps, res, { request, prepared, lease, received, abort });
    } finally {
      deps.slots.release(lease, (performance.now() - slotTaken) / 1000);
    }
    if (generation !== undefined) record(deps, logger, { generation, quant: lease.engine.quant, received, slotTaken, aborted: abort.signal.aborted });
  } finally {
    deps.inFlight.delete(abort);
    res.off("close", onClose);
  }
}

/**
 * Checks the request against the serving variant before it queues. While a drain-mode swap has no variant
 * loaded, or when the variant is disposed during the check, the check waits until a slot is held.
 */
async function prepareEarly(deps: CompletionDeps, request: ChatRequest): Promise<Preparation | undefined> {
  const engine = deps.slots.serving;
  if (engine === undefined) return undefined;
  try {
    return { engine, prepared: await prepareFor(deps, request, engine) };
  } catch (error) {
    if (engine.disposed) return undefined;
    throw error;
  }
}

function prepareFor(deps: CompletionDeps, request: ChatRequest, engine: Engine): Promise<PreparedChat> {
  return prepareChat(request, {
    chatWrapper: engine.chatWrapper,
    tokenize: (text) => text.tokenize(engine.model.tokenizer).length,
    contextSize: engine.context.contextSize,
    structuredOutputs: deps.structuredOutputs,
  });
}

/** Generates on the held slot and writes the reply, as a stream or as one JSON body. */
async function respond(deps: CompletionDeps, res: Response, admitted: Admitted): Promise<Generation | undefined> {
  const { request, prepared, lease, abort } = admitted;
  const id = newCompletionId();
  const created = Math.floor(Date.now() / 1000);
  // The prompt count lets a gateway bill a stream that is cut before its usage chunk.
  const headers = { "x-spillway-quant": lease.engine.quant, "x-spillway-prompt-tokens": String(prepared.promptTokens) };
  if (request.stream) {
    return streamCompletion(deps, res, { id, created, headers, includeUsage: request.includeUsage }, async (listener) => {
      const result = await generate(lease.sequence, request, prepared, listener, abort.signal);
      throwIfShutDown(abort.signal);
      return result;
    });
  }
  const generation = await generate(lease.sequence, request, prepared, ignoreOutput, abort.signal);
  throwIfShutDown(abort.signal);
  if (!abort.signal.aborted) {
    res.set(headers).set("openai-processing-ms", String(Math.round(performance.now() - admitted.received)));
    res.json(completionBody(id, created, deps.modelId, generation));
  }
  return generation;
}

/** The abort reason shutdown uses, so a cut reply ends in an error rather than a normal finish. */
export class WorkerShutdownError extends ApiError {
  override name = "WorkerShutdownError";

  constructor() {
    super(503, "The worker shut down before the reply was complete. Retry the request.", {
      type: "server_error",
      code: "worker_shutting_down",
    });
  }
}

function throwIfShutDown(signal: AbortSignal): void {
  if (signal.aborted && signal.reason instanceof WorkerShutdownError) throw signal.reason;
}

interface StreamStart {
  id: string;
  created: number;
  headers: Record<string, string>;
  includeUsage: boolean;
}

/**
 * Runs a generation into an SSE stream. A failure after the stream opened is sent as an error event,
 * because the status line is gone by then and a silent end would look like a complete reply.
 */
async function streamCompletion(
  deps: CompletionDeps,
  res: Response,
  start: StreamStart,
  run: (listener: ChunkStream) => Promise<Generation>,
): Promise<Generation | undefined> {
  const writer = new SseWriter(res);
  writer.open({ ...start.headers, "x-request-id": res.locals.requestId as string });
  const stream = new ChunkStream(writer, start.id, start.created, deps.modelId, start.includeUsage);
  stream.start();
  try {
    const generation = await run(stream);
    stream.finish(generation);
    return generation;
  } catch (error) {
    const apiError = error instanceof ApiError ? error : undefined;
    deps.logger.error({ requestId: res.locals.requestId as string, err: error }, "generation failed after the stream started");
    writer.fail(
      apiError?.toBody() ?? {
        error: { message: "Generation failed. Retry the request.", type: "server_error", param: null, code: null },
      },
    );
    return undefined;
  }
}

interface Finished {
  generation: Generation;
  /** The variant that decoded it. */
  quant: string;
  received: number;
  slotTaken: number;
  aborted: boolean;
}

function record(deps: CompletionDeps, logger: Logger, finished: Finished): void {
  const { generation, received, slotTaken } = finished;
  deps.metrics.tokens.inc({ kind: "prompt" }, generation.promptTokens);
  deps.metrics.tokens.inc({ kind: "completion" }, generation.completionTokens);
  if (generation.firstOutputSeconds !== undefined) {
    deps.metrics.timeToFirstToken.observe((slotTaken - received) / 1000 + generation.firstOutputSeconds);
  }
  if (generation.completionTokens > 1) {
    deps.metrics.timePerOutputToken.observe(generation.decodeSeconds / (generation.completionTokens - 1));
  }
  deps.decodeRates.observe(finished.quant, generation.completionTokens, generation.decodeSeconds);
  logger.debug(
    {
      quant: finished.quant,
      promptTokens: generation.promptTokens,
      completionTokens: generation.completionTokens,
      finishReason: generation.finishReason,
      queueSeconds: (slotTaken - received) / 1000,
      aborted: finished.aborted,
    },
    "chat completion finished",
  );
}
