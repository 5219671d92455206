import { Agent, type IncomingMessage } from "node:http";

import type { Logger } from "pino";

import type { ApiErrorBody } from "../../api/errors.ts";
import { readSseData } from "../../api/sse-reader.ts";
import { BackendError, type BackendCall, type BackendReply, type ChatCompletion, type ChatCompletionChunk } from "./types.ts";
import { headerValue, postJson, readText, type Exchange } from "./worker-http.ts";

/** The replica a call goes to. */
export interface ReplicaTarget {
  id: string;
  pool: string;
  /** Base URL of the worker. It must be plain `http://`, as both runtimes build it. */
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
  // `node:http` with keep-alive costs far less CPU per call than the global fetch (see "Gateway overhead"
  // in docs/benchmarks.md). The pool queue already caps the requests in flight to each replica at its
  // slots, so the agent sets no socket limit of its own, which would queue requests a second time.
  // NOTE: a POST sent on an idle socket just as the worker closes it fails with ECONNRESET, and Node does
  // not resend it. Node 20's agent drops idle sockets 1 s before the Keep-Alive timeout the worker sends
  // (5 s by Node's default), which makes this rare. The call then fails as unreachable, before the first
  // byte, so the gateway moves it to another replica or to overflow as for any such failure.
  readonly #agent = new Agent({ keepAlive: true });

  constructor(options: WorkerBackendOptions) {
    this.#options = { connectTimeoutSeconds: 30, idleTimeoutSeconds: 120, ...options };
  }

  async send(call: BackendCall, replica: ReplicaTarget): Promise<BackendReply> {
    const body = { ...call.request, model: replica.pool };
    if (call.request.stream === true) body.stream_options = { include_usage: true };

    // The connect timeout covers the wait for headers only; a long stream must not hit it.
    let exchange: Exchange;
    try {
      exchange = await postJson(`${replica.url}/v1/chat/completions`, JSON.stringify(body), {
        agent: this.#agent,
        headers: { "x-request-id": call.requestId },
        headersTimeoutMs: this.#options.connectTimeoutSeconds * 1000,
        signal: call.signal,
      });
    } catch (error) {
      throw unreachable(replica, error);
    }
    const { response } = exchange;
    const quant = headerValue(response, "x-spillway-quant");
    const status = response.statusCode ?? 0;
    if (status < 200 || status > 299) throw await errorFromResponse(status, response, replica);

    if (call.request.stream !== true) {
      let text: string;
      try {
        text = await readText(response);
      } catch (error) {
        // Nothing reached the client yet, so a connection lost while reading the body may be retried.
        throw unreachable(replica, error);
      }
      return { kind: "completion", completion: JSON.parse(text) as ChatCompletion, quant };
    }
    const events = this.#chunks(exchange, call.signal, replica);
    const first = await events.next();
    if (first.done === true) throw unreachable(replica, new Error("the stream ended before its first chunk"));
    const promptTokens = Number(headerValue(response, "x-spillway-prompt-tokens") ?? Number.NaN);
    return {
      kind: "stream",
      first: first.value,
      rest: { [Symbol.asyncIterator]: () => events },
      quant,
      ...(Number.isInteger(promptTokens) ? { promptTokens } : {}),
    };
  }

  /** Closes the idle keep-alive sockets and any still in use. Calls after this open new sockets. */
  close(): void {
    this.#agent.destroy();
  }

  /**
   * Yields chunks until `[DONE]`. An error event, a silence past the idle timeout or an early end throws.
   * Leaving early (an error, the consumer's `return()`) destroys the request, so that its socket with a
   * half-read response is closed instead of going back to the agent.
   */
  async *#chunks(exchange: Exchange, signal: AbortSignal, replica: ReplicaTarget): AsyncGenerator<ChatCompletionChunk> {
    const idleMilliseconds = this.#options.idleTimeoutSeconds * 1000;
    const iterator = readSseData(exchange.response)[Symbol.asyncIterator]();
    let sawDone = false;
    let ended = false;
    try {
      for (;;) {
        // Events already buffered are still yielded after an abort unless the signal is checked here.
        signal.throwIfAborted();
        const next = await withTimeout(iterator.next(), idleMilliseconds);
        if (next === "timeout") {
          if (sawDone) return;
          throw midStreamError(replica, `sent nothing for ${this.#options.idleTimeoutSeconds} s`);
        }
        if (next.done === true) {
          if (!sawDone) throw midStreamError(replica, "closed the stream before [DONE]");
          ended = true;
          return;
        }
        // The worker ends the response right after `[DONE]`. Reading on to that end lets the agent reuse
        // the socket, and anything a replica sends after `[DONE]` is ignored.
        if (sawDone) continue;
        if (next.value === "[DONE]") {
          sawDone = true;
          continue;
        }
        const payload = JSON.parse(next.value) as ChatCompletionChunk | ApiErrorBody;
        if ("error" in payload) throw new BackendError(502, payload, { retryable: false });
        yield payload;
      }
    } finally {
      // Destroying ends a pending read too; returning the SSE iterator instead would wait for that read.
      if (!ended) exchange.request.destroy();
    }
  }
}

async function withTimeout<T>(promise: Promise<T>, milliseconds: number): Promise<T | "timeout"> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<"timeout">((resolve) => {
    timer = setTimeout(() => resolve("timeout"), milliseconds);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function errorFromResponse(status: number, response: IncomingMessage, replica: ReplicaTarget): Promise<BackendError> {
  const retryable = status === 429 || status >= 500;
  try {
    const body = JSON.parse(await readText(response)) as Partial<ApiErrorBody>;
    if (body.error !== undefined) return new BackendError(status, body as ApiErrorBody, { retryable });
  } catch {
    // Fall through: a body that is not an OpenAI error, or one cut short, is reported as a replica failure.
  }
  return new BackendError(
    502,
    { error: { message: `Replica ${replica.id} returned HTTP ${status} without an OpenAI error body.`, type: "server_error", param: null, code: "local_error" } },
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
