import { readSseData } from "../../api/sse-reader.ts";
import { parseGoogleStatus, upstreamError, upstreamFailure } from "./gemini-errors.ts";
import {
  newToolCallId,
  repairFinishReason,
  repairUsage,
  type SignatureRecorder,
  type UpstreamToolCall,
  type UpstreamUsage,
} from "./gemini-response.ts";
import { signatureOf } from "./gemini-signatures.ts";
import { BackendError, type ChatCompletionChunk, type Usage } from "./types.ts";

/**
 * Gemini's stream rewritten to OpenAI's stream contract. Gemini sends tool-call deltas without `index`,
 * omits `finish_reason` until the last content chunk, puts the finish reason and usage on that content
 * chunk, and sends `stop` after tool calls. The output has `role` on the first delta, `finish_reason: null`
 * and `usage: null` on every content chunk, a closing chunk with an empty delta and the finish reason, and
 * one chunk with `choices: []` and the repaired usage.
 */

type Delta = ChatCompletionChunk["choices"][number]["delta"];
type ToolCallDelta = NonNullable<Delta["tool_calls"]>[number];

interface UpstreamChunk {
  id?: string;
  created?: number;
  model?: string;
  choices?: {
    index?: number;
    delta?: { content?: string | null; tool_calls?: UpstreamToolCall[] | null };
    finish_reason?: string | null;
  }[];
  usage?: UpstreamUsage | null;
}

interface ToolCallState {
  id: string;
  /** The id Gemini sent, to recognise a later fragment of the same call. */
  upstreamId: string | undefined;
  upstreamIndex: number | undefined;
}

interface ChoiceState {
  roleSent: boolean;
  toolCalls: ToolCallState[];
  finishReason: string | null | undefined;
}

export interface StreamOptions {
  idleTimeoutMs: number;
  /** Aborting it ends the iteration quietly: the caller asked for the stop. */
  signal: AbortSignal;
  /** Aborts the upstream request, which closes the connection and errors the body. */
  abortUpstream: () => void;
  apiKey: string;
  recordSignature: SignatureRecorder;
  /** Called when the stream ended without usage, which leaves the request unmetered. */
  onMissingUsage: () => void;
}

/** Reads a Gemini SSE body and yields OpenAI chunks; every failure is thrown as a `BackendError`. */
export async function* geminiChunks(body: ReadableStream<Uint8Array>, options: StreamOptions): AsyncGenerator<ChatCompletionChunk> {
  try {
    yield* normalize(withIdleTimeout(readSseData(body), options.idleTimeoutMs, options.abortUpstream), options);
  } catch (error) {
    if (options.signal.aborted) return;
    throw toStreamFailure(error, options.idleTimeoutMs);
  }
}

class IdleTimeoutError extends Error {
  override name = "IdleTimeoutError";
}

/**
 * Passes events through, throwing `IdleTimeoutError` when the next one takes longer than `idleTimeoutMs`.
 * A read stuck on a silent connection cannot be cancelled through the reading generator, whose `return()`
 * waits for that read, so timeouts and early exits abort the upstream request instead.
 */
async function* withIdleTimeout<T>(events: AsyncIterable<T>, idleTimeoutMs: number, abortUpstream: () => void): AsyncGenerator<T> {
  const iterator = events[Symbol.asyncIterator]();
  let finished = false;
  try {
    for (;;) {
      const next = iterator.next();
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), idleTimeoutMs);
      });
      const result = await Promise.race([next, timeout]).finally(() => clearTimeout(timer));
      if (result === "timeout") throw new IdleTimeoutError(`no data for ${idleTimeoutMs} ms`);
      if (result.done === true) {
        finished = true;
        return;
      }
      yield result.value;
    }
  } finally {
    if (!finished) abortUpstream();
  }
}

function toStreamFailure(error: unknown, idleTimeoutMs: number): BackendError {
  if (error instanceof IdleTimeoutError) {
    const seconds = idleTimeoutMs / 1000;
    return upstreamFailure(504, "upstream_idle_timeout", `Gemini sent nothing for ${seconds} s, so Spillway closed the stream.`, {
      retryable: true,
      cause: error,
    });
  }
  if (error instanceof BackendError) return error;
  // Typically undici's TypeError("terminated"), which Node's fetch raises for a connection closed mid-body.
  return upstreamFailure(502, "upstream_stream_interrupted", "Gemini's stream broke off before it ended.", {
    retryable: true,
    cause: error,
  });
}

async function* normalize(events: AsyncIterable<string>, options: StreamOptions): AsyncGenerator<ChatCompletionChunk> {
  const choices = new Map<number, ChoiceState>();
  let header: Pick<ChatCompletionChunk, "id" | "created" | "model"> | undefined;
  let usage: UpstreamUsage | undefined;
  let sawDone = false;

  for await (const data of events) {
    if (data === "[DONE]") {
      sawDone = true;
      break;
    }
    const chunk = parseChunk(data, options.apiKey);
    header ??= { id: chunk.id ?? "", created: chunk.created ?? Math.floor(Date.now() / 1000), model: chunk.model ?? "" };
    if (chunk.usage != null) usage = chunk.usage;

    for (const [position, choice] of (chunk.choices ?? []).entries()) {
      const index = choice.index ?? position;
      const state = choices.get(index) ?? { roleSent: false, toolCalls: [], finishReason: undefined };
      choices.set(index, state);
      if (choice.finish_reason != null) state.finishReason = choice.finish_reason;
      const delta = repairDelta(choice.delta ?? {}, state, options.recordSignature);
      if (delta !== undefined) yield { ...header, object: "chat.completion.chunk", choices: [{ index, delta, finish_reason: null }], usage: null };
    }
  }

  const ended = [...choices.values()].some((state) => state.finishReason != null);
  if (!sawDone && !ended) {
    throw upstreamFailure(502, "upstream_stream_incomplete", "Gemini ended the stream before its final chunk.", { retryable: true });
  }
  header ??= { id: "", created: Math.floor(Date.now() / 1000), model: "" };
  if (choices.size === 0) choices.set(0, { roleSent: false, toolCalls: [], finishReason: undefined });
  yield* closingChunks(header, choices, usage === undefined ? undefined : repairUsage(usage));
  if (usage === undefined) options.onMissingUsage();
}

function* closingChunks(
  header: Pick<ChatCompletionChunk, "id" | "created" | "model">,
  choices: Map<number, ChoiceState>,
  usage: Usage | undefined,
): Generator<ChatCompletionChunk> {
  for (const [index, state] of choices) {
    const delta: Delta = state.roleSent ? {} : { role: "assistant" };
    const finishReason = repairFinishReason(state.finishReason, state.toolCalls.length > 0);
    yield { ...header, object: "chat.completion.chunk", choices: [{ index, delta, finish_reason: finishReason }], usage: null };
  }
  if (usage !== undefined) yield { ...header, object: "chat.completion.chunk", choices: [], usage };
}

/** Parses one event; an error event is thrown as the `BackendError` its status calls for. */
function parseChunk(data: string, apiKey: string): UpstreamChunk {
  let parsed: unknown;
  try {
    parsed = JSON.parse(data);
  } catch (error) {
    throw upstreamFailure(502, "upstream_invalid_stream", "Gemini sent a stream event that is not JSON.", { retryable: true, cause: error });
  }
  if (Array.isArray(parsed) || (typeof parsed === "object" && parsed !== null && "error" in parsed)) {
    const status = parseGoogleStatus(data);
    throw upstreamError(status?.code ?? 500, data, { apiKey });
  }
  if (typeof parsed !== "object" || parsed === null) {
    throw upstreamFailure(502, "upstream_invalid_stream", "Gemini sent a stream event that is not a chunk object.", { retryable: true });
  }
  return parsed;
}

/** Returns the delta to send, or undefined when the upstream delta carried nothing a client needs. */
function repairDelta(
  upstream: NonNullable<NonNullable<UpstreamChunk["choices"]>[number]["delta"]>,
  state: ChoiceState,
  recordSignature: SignatureRecorder,
): Delta | undefined {
  const delta: Delta = {};
  if (typeof upstream.content === "string" && upstream.content.length > 0) delta.content = upstream.content;
  const toolCalls = (upstream.tool_calls ?? [])
    .map((fragment) => repairToolCallFragment(fragment, state, recordSignature))
    .filter((fragment) => fragment !== undefined);
  if (toolCalls.length > 0) delta.tool_calls = toolCalls;
  if (delta.content === undefined && delta.tool_calls === undefined) return undefined;

  if (!state.roleSent) {
    state.roleSent = true;
    return { role: "assistant", ...delta };
  }
  return delta;
}

/**
 * Gives a fragment its position in the call list. Without an `index`, a fragment starts a new call when it
 * has a name or an id not seen before, and continues the last call otherwise.
 */
function repairToolCallFragment(fragment: UpstreamToolCall, state: ChoiceState, recordSignature: SignatureRecorder): ToolCallDelta | undefined {
  const upstreamId = fragment.id !== undefined && fragment.id.length > 0 ? fragment.id : undefined;
  let position = findCall(fragment, upstreamId, state);
  const starts = position === undefined;
  if (position === undefined) {
    position = state.toolCalls.length;
    state.toolCalls.push({ id: upstreamId ?? newToolCallId(), upstreamId, upstreamIndex: fragment.index });
  }
  const call = state.toolCalls[position];
  if (call === undefined) return undefined;

  const signature = signatureOf(fragment);
  if (signature !== undefined) recordSignature(call.id, signature);

  const argumentsText = fragment.function?.arguments ?? "";
  if (starts) {
    return { index: position, id: call.id, type: "function", function: { name: fragment.function?.name ?? "", arguments: argumentsText } };
  }
  return argumentsText.length > 0 ? { index: position, function: { arguments: argumentsText } } : undefined;
}

function findCall(fragment: UpstreamToolCall, upstreamId: string | undefined, state: ChoiceState): number | undefined {
  if (fragment.index !== undefined) {
    const position = state.toolCalls.findIndex((call) => call.upstreamIndex === fragment.index);
    return position === -1 ? undefined : position;
  }
  if (upstreamId !== undefined) {
    const position = state.toolCalls.findIndex((call) => call.upstreamId === upstreamId);
    return position === -1 ? undefined : position;
  }
  const hasName = fragment.function?.name !== undefined && fragment.function.name.length > 0;
  if (hasName || state.toolCalls.length === 0) return undefined;
  return state.toolCalls.length - 1;
}
