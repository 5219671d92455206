import type { Request, Response } from "express";
import type { Logger } from "pino";

import { parseChatRequest } from "../api/chat-request.ts";
import { ApiError, modelNotFound } from "../api/errors.ts";
import { SseWriter } from "../api/sse.ts";
import { ChunkStream, completionBody, ignoreOutput, newCompletionId } from "./chunks.ts";
import type { Engine } from "./engine.ts";
import { generate, prepareChat, type Generation } from "./generate.ts";
import type { WorkerMetrics } from "./metrics.ts";
import type { StructuredOutputs } from "./structured-output.ts";
import type { ChatWrapper } from "node-llama-cpp";

/** Dependencies of the chat completions handler. */
export interface CompletionDeps {
  modelId: string;
  engine: Engine;
  chatWrapper: ChatWrapper;
  structuredOutputs: StructuredOutputs;
  metrics: WorkerMetrics;
  /** Tracks in-flight work so shutdown can wait for it and abort what outlasts the drain. */
  inFlight: Set<AbortController>;
  logger: Logger;
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

  const prepared = await prepareChat(request, {
    chatWrapper: deps.chatWrapper,
    tokenize: (text) => text.tokenize(deps.engine.model.tokenizer).length,
    contextSize: deps.engine.context.contextSize,
    structuredOutputs: deps.structuredOutputs,
  });

  const abort = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) abort.abort(new Error("client disconnected"));
  };
  res.on("close", onClose);
  deps.inFlight.add(abort);
  try {
    const sequence = await deps.engine.acquire(abort.signal);
    const slotTaken = performance.now();
    let generation: Generation | undefined;
    try {
      const id = newCompletionId();
      const created = Math.floor(Date.now() / 1000);
      // The prompt count lets a gateway bill a stream that is cut before its usage chunk.
      const headers = { "x-spillway-quant": deps.engine.quant ?? "unknown", "x-spillway-prompt-tokens": String(prepared.promptTokens) };
      if (request.stream) {
        generation = await streamCompletion(deps, res, { id, created, headers, includeUsage: request.includeUsage }, async (listener) => {
          const result = await generate(sequence, request, prepared, listener, abort.signal);
          throwIfShutDown(abort.signal);
          return result;
        });
      } else {
        generation = await generate(sequence, request, prepared, ignoreOutput, abort.signal);
        throwIfShutDown(abort.signal);
        if (!abort.signal.aborted) {
          res.set(headers).set("openai-processing-ms", String(Math.round(performance.now() - received)));
          res.json(completionBody(id, created, deps.modelId, generation));
        }
      }
    } finally {
      deps.engine.release(sequence, (performance.now() - slotTaken) / 1000);
    }
    if (generation !== undefined) record(deps, logger, generation, received, slotTaken, abort.signal.aborted);
  } finally {
    deps.inFlight.delete(abort);
    res.off("close", onClose);
  }
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

function record(
  deps: CompletionDeps,
  logger: Logger,
  generation: Generation,
  received: number,
  slotTaken: number,
  aborted: boolean,
): void {
  deps.metrics.tokens.inc({ kind: "prompt" }, generation.promptTokens);
  deps.metrics.tokens.inc({ kind: "completion" }, generation.completionTokens);
  if (generation.firstOutputSeconds !== undefined) {
    deps.metrics.timeToFirstToken.observe((slotTaken - received) / 1000 + generation.firstOutputSeconds);
  }
  if (generation.completionTokens > 1) {
    deps.metrics.timePerOutputToken.observe(generation.decodeSeconds / (generation.completionTokens - 1));
  }
  logger.debug(
    {
      promptTokens: generation.promptTokens,
      completionTokens: generation.completionTokens,
      finishReason: generation.finishReason,
      queueSeconds: (slotTaken - received) / 1000,
      aborted,
    },
    "chat completion finished",
  );
}
