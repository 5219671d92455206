import type { Logger } from "pino";

import type { ApiErrorBody } from "../../api/errors.ts";
import { readSseData } from "../../api/sse-reader.ts";
import { BackendError, type BackendCall, type BackendReply, type ChatCompletion, type ChatCompletionChunk } from "./types.ts";

/** The replica a call goes to. */
export interface ReplicaTarget {
  id: string;
  pool: string;
  url: string;
}

export interface WorkerBackendOptions {
  logger: Logger;
  /** Maximum wait for response headers. */
  connectTimeoutSeconds?: number;
  /** Maximum silence between two stream events. */
  idleTimeoutSeconds?: number;
}

/**
 * Sends chat completions to worker replicas over HTTP. The worker speaks the same OpenAI contract as
 * the gateway, so this mostly relays; its job is to turn every failure into a `BackendError` at the
 * right moment (before or after the first byte) and to always request usage for metering.
 */
export class WorkerBackend {
  readonly name = "local" as const;
  readonly #options: Required<WorkerBackendOptions>;

  constructor(options: WorkerBackendOptions) {
    this.#options = { connectTimeoutSeconds: 30, idleTimeoutSeconds: 120, ...options };
  }

  async send(call: BackendCall, replica: ReplicaTarget): Promise<BackendReply> {
    const body = { ...call.request, model: replica.pool };
    if (call.request.stream === true) body.stream_options = { include_usage: true };

    // The connect timeout covers the wait for headers only; a long stream must not hit it.
    const upstream = new AbortController();
    const onAbort = () => upstream.abort(call.signal.reason);
    call.signal.addEventListener("abort", onAbort, { once: true });
    const connectTimer = setTimeout(() => upstream.abort(new Error("connect timeout")), this.#options.connectTimeoutSeconds * 1000);
    let response: Response;
    try {
      response = await fetch(`${replica.url}/v1/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", "x-request-id": call.requestId },
        body: JSON.stringify(body),
        signal: upstream.signal,
      });
    } catch (error) {
      call.signal.removeEventListener("abort", onAbort);
      throw unreachable(replica, error);
    } finally {
      clearTimeout(connectTimer);
    }
    const quant = response.headers.get("x-spillway-quant");
    if (!response.ok) throw await errorFromResponse(response, replica);
    if (response.body === null) throw unreachable(replica, new Error("empty response body"));

    if (call.request.stream !== true) {
      const completion = (await response.json()) as ChatCompletion;
      return { kind: "completion", completion, quant };
    }
    const events = this.#chunks(response.body, upstream, replica);
    const first = await events.next();
    if (first.done === true) throw unreachable(replica, new Error("the stream ended before its first chunk"));
    const promptTokens = Number(response.headers.get("x-spillway-prompt-tokens") ?? Number.NaN);
    return {
      kind: "stream",
      first: first.value,
      rest: { [Symbol.asyncIterator]: () => events },
      quant,
      ...(Number.isInteger(promptTokens) ? { promptTokens } : {}),
    };
  }

  /** Yields chunks until `[DONE]`; an error event, a silence past the idle timeout or an early end throws. */
  async *#chunks(body: ReadableStream<Uint8Array>, upstream: AbortController, replica: ReplicaTarget): AsyncGenerator<ChatCompletionChunk> {
    const idleMilliseconds = this.#options.idleTimeoutSeconds * 1000;
    const iterator = readSseData(body)[Symbol.asyncIterator]();
    for (;;) {
      const next = await withTimeout(iterator.next(), idleMilliseconds, upstream.signal);
      if (next === "timeout") {
        // Aborting the request ends the pending read; returning the iterator would wait for that read.
        upstream.abort(new Error("idle timeout"));
        throw midStreamError(replica, `sent nothing for ${this.#options.idleTimeoutSeconds} s`);
      }
      if (next.done === true) throw midStreamError(replica, "closed the stream before [DONE]");
      if (next.value === "[DONE]") return;
      const payload = JSON.parse(next.value) as ChatCompletionChunk | ApiErrorBody;
      if ("error" in payload) throw new BackendError(502, payload, { retryable: false });
      yield payload;
    }
  }
}

async function withTimeout<T>(promise: Promise<T>, milliseconds: number, signal: AbortSignal): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), milliseconds);
  });
  try {
    signal.throwIfAborted();
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function errorFromResponse(response: Response, replica: ReplicaTarget): Promise<BackendError> {
  const retryable = response.status === 429 || response.status >= 500;
  const text = await response.text();
  try {
    const body = JSON.parse(text) as Partial<ApiErrorBody>;
    if (body.error !== undefined) return new BackendError(response.status, body as ApiErrorBody, { retryable });
  } catch {
    // Fall through: a body that is not an OpenAI error is reported as a replica failure.
  }
  return new BackendError(
    502,
    { error: { message: `Replica ${replica.id} returned HTTP ${response.status} without an OpenAI error body.`, type: "server_error", param: null, code: "local_error" } },
    { retryable },
  );
}

function unreachable(replica: ReplicaTarget, cause: unknown): BackendError {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new BackendError(
    502,
    { error: { message: `Replica ${replica.id} of pool ${replica.pool} failed before responding (${reason}).`, type: "server_error", param: null, code: "local_error" } },
    { retryable: true, cause },
  );
}

function midStreamError(replica: ReplicaTarget, what: string): BackendError {
  return new BackendError(
    502,
    { error: { message: `Replica ${replica.id} ${what}; the reply is incomplete. Retry the request.`, type: "server_error", param: null, code: "local_error" } },
    { retryable: false },
  );
}
