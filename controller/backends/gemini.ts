import { readFileSync } from "node:fs";

import type { Logger } from "pino";

import type { GeminiConfig } from "../config/schema.ts";
import { CircuitBreaker, type CircuitPermit, type CircuitState } from "./circuit-breaker.ts";
import { errorBody, upstreamError, upstreamFailure } from "./gemini-errors.ts";
import { toGeminiRequest } from "./gemini-request.ts";
import { repairCompletion } from "./gemini-response.ts";
import { SignatureCache } from "./gemini-signatures.ts";
import { geminiChunks } from "./gemini-stream.ts";
import { BackendError, type Backend, type BackendCall, type BackendReply } from "./types.ts";

/** The variable read when the config names neither `apiKeyEnv` nor `apiKeyFile`, as in Google's examples. */
export const defaultApiKeyEnv = "GEMINI_API_KEY";

export interface GeminiBackendOptions {
  logger: Logger;
  /** The resolved key; `resolveGeminiApiKey(config)` when unset. */
  apiKey?: string;
  fetch?: typeof fetch;
  /** Clock in milliseconds for the circuit breaker. */
  now?: () => number;
  /** Waits between attempts; must reject when `signal` aborts. */
  sleep?: (milliseconds: number, signal: AbortSignal) => Promise<void>;
  /** Source of backoff jitter in [0, 1). */
  random?: () => number;
  /** Longest RetryInfo delay waited for; a longer one fails at once with `retryAfterSeconds`. Default 30. */
  maxRetryDelaySeconds?: number;
  /** First backoff step, doubled per attempt. Default 500 ms. */
  retryBaseDelayMs?: number;
  /** Cap on one backoff step. Default 8000 ms. */
  retryMaxBackoffMs?: number;
  /** Thought signatures kept for replayed tool calls. Default 10,000. */
  signatureCacheSize?: number;
  /** Called after the backend logged a circuit state change, for metrics such as `spillway_circuit_open`. */
  onCircuitStateChange?: (state: CircuitState, previous: CircuitState) => void;
}

/** Reads the Gemini API key from the file or environment variable the config names, trimmed. */
export function resolveGeminiApiKey(config: Pick<GeminiConfig, "apiKeyEnv" | "apiKeyFile">, env: NodeJS.ProcessEnv = process.env): string {
  if (config.apiKeyFile !== undefined) {
    let text: string;
    try {
      text = readFileSync(config.apiKeyFile, "utf8");
    } catch (error) {
      const reason = (error as NodeJS.ErrnoException).code ?? "read failed";
      throw new Error(`Cannot read the Gemini API key file ${config.apiKeyFile} (overflow.gemini.apiKeyFile): ${reason}.`, { cause: error });
    }
    const key = text.trim();
    if (key.length === 0) throw new Error(`The Gemini API key file ${config.apiKeyFile} (overflow.gemini.apiKeyFile) is empty. Write the key into it.`);
    return key;
  }
  const variable = config.apiKeyEnv ?? defaultApiKeyEnv;
  const key = env[variable]?.trim() ?? "";
  if (key.length === 0) {
    throw new Error(
      `The environment variable ${variable} must contain the Gemini API key for overflow, but it is not set or empty. ` +
        "Set it, or name another source with overflow.gemini.apiKeyEnv or apiKeyFile.",
    );
  }
  return key;
}

/**
 * The overflow backend: Gemini through its OpenAI-compatible endpoint, with the request translated to what
 * Gemini accepts and the response repaired to OpenAI's contract. It retries before the first byte only,
 * and a circuit breaker stops calling Gemini after repeated failures.
 */
export class GeminiBackend implements Backend {
  readonly name = "gemini" as const;
  readonly #config: GeminiConfig;
  readonly #logger: Logger;
  readonly #apiKey: string;
  readonly #fetch: typeof fetch;
  readonly #sleep: (milliseconds: number, signal: AbortSignal) => Promise<void>;
  readonly #random: () => number;
  readonly #maxRetryDelaySeconds: number;
  readonly #retryBaseDelayMs: number;
  readonly #retryMaxBackoffMs: number;
  readonly #url: string;
  readonly #breaker: CircuitBreaker;
  readonly #signatures: SignatureCache;

  constructor(config: GeminiConfig, options: GeminiBackendOptions) {
    this.#config = config;
    this.#logger = options.logger.child({ backend: "gemini" });
    this.#apiKey = options.apiKey ?? resolveGeminiApiKey(config);
    this.#fetch = options.fetch ?? fetch;
    this.#sleep = options.sleep ?? sleep;
    this.#random = options.random ?? Math.random;
    this.#maxRetryDelaySeconds = options.maxRetryDelaySeconds ?? 30;
    this.#retryBaseDelayMs = options.retryBaseDelayMs ?? 500;
    this.#retryMaxBackoffMs = options.retryMaxBackoffMs ?? 8000;
    this.#url = new URL("chat/completions", config.baseUrl.endsWith("/") ? config.baseUrl : `${config.baseUrl}/`).href;
    this.#signatures = new SignatureCache(options.signatureCacheSize ?? 10_000);
    this.#breaker = new CircuitBreaker({
      failureThreshold: config.circuitBreaker.failureThreshold,
      coolDownMs: config.circuitBreaker.coolDownSeconds * 1000,
      ...(options.now === undefined ? {} : { now: options.now }),
      onStateChange: (state, previous) => {
        this.#logger.info({ state, previous }, "Gemini circuit changed state");
        options.onCircuitStateChange?.(state, previous);
      },
    });
  }

  get circuitState(): CircuitState {
    return this.#breaker.state;
  }

  /** Whether `send` would be let through the circuit now; the gateway skips overflow when it is not. */
  available(): boolean {
    return this.#breaker.wouldAdmit;
  }

  async send(call: BackendCall): Promise<BackendReply> {
    const permit = this.#breaker.tryAcquire();
    if (permit === undefined) throw this.#circuitOpenError();
    try {
      const reply = await this.#sendWithRetries(call);
      permit.success();
      return reply;
    } catch (error) {
      settleFailure(permit, error, call.signal);
      throw error;
    }
  }

  async #sendWithRetries(call: BackendCall): Promise<BackendReply> {
    const log = this.#logger.child({ requestId: call.requestId });
    const translated = toGeminiRequest(call.request, this.#config.model, this.#signatures);
    if (translated.droppedFields.length > 0) log.debug({ fields: translated.droppedFields }, "fields Gemini does not accept were not forwarded");
    if (translated.unsignedToolCalls > 0) {
      log.debug({ toolCalls: translated.unsignedToolCalls }, "replayed tool calls had no known thought signature");
    }
    const body = JSON.stringify(translated.body);

    for (let attempt = 1; ; attempt += 1) {
      try {
        return await this.#attempt(call, body, log);
      } catch (error) {
        const failure = call.signal.aborted ? abortedError(call.signal) : error;
        const delayMs = this.#retryDelayMs(failure, attempt);
        if (delayMs === undefined || !(failure instanceof BackendError)) {
          if (failure instanceof BackendError && !call.signal.aborted) {
            // The caller logs the failure it receives; this line adds how many attempts were made.
            log.debug({ attempts: attempt, status: failure.status, code: failure.body.error.code }, "Gemini request failed");
          }
          throw failure;
        }
        log.info({ attempt, status: failure.status, code: failure.body.error.code, delayMs }, "retrying Gemini request");
        await this.#sleep(delayMs, call.signal).catch(() => {
          throw abortedError(call.signal);
        });
      }
    }
  }

  /** Returns how long to wait before the next attempt, or undefined when the failure is final. */
  #retryDelayMs(failure: unknown, attempt: number): number | undefined {
    if (!(failure instanceof BackendError) || !failure.retryable || attempt >= this.#config.maxAttempts) return undefined;
    if (failure.retryAfterSeconds !== undefined) {
      return failure.retryAfterSeconds <= this.#maxRetryDelaySeconds ? failure.retryAfterSeconds * 1000 : undefined;
    }
    const backoff = Math.min(this.#retryBaseDelayMs * 2 ** (attempt - 1), this.#retryMaxBackoffMs);
    // Equal jitter: at least half the step, so concurrent retries spread out without retrying at once.
    return backoff / 2 + (backoff / 2) * this.#random();
  }

  async #attempt(call: BackendCall, body: string, log: Logger): Promise<BackendReply> {
    const stream = call.request.stream === true;
    const attemptController = new AbortController();
    const signal = AbortSignal.any([call.signal, attemptController.signal]);
    const response = await this.#post(body, stream, signal, attemptController);
    const idleTimeoutMs = this.#config.idleTimeoutSeconds * 1000;

    if (!response.ok) {
      const text = await readText(response, idleTimeoutMs, attemptController);
      throw upstreamError(response.status, text, { apiKey: this.#apiKey, retryAfterHeader: response.headers.get("retry-after") });
    }
    const recordSignature = (toolCallId: string, signature: string) => this.#signatures.set(toolCallId, signature);

    if (!stream) {
      const text = await readText(response, idleTimeoutMs, attemptController);
      const { completion, hadUsage } = repairCompletion(parseJson(text), recordSignature);
      if (!hadUsage) log.warn("Gemini sent a completion without usage, so it is metered as zero tokens");
      return { kind: "completion", completion, quant: null };
    }

    if (response.body === null) throw upstreamFailure(502, "upstream_invalid_response", "Gemini sent a stream response without a body.", { retryable: true });
    const chunks = geminiChunks(response.body, {
      idleTimeoutMs,
      signal: call.signal,
      abortUpstream: () => attemptController.abort(),
      apiKey: this.#apiKey,
      recordSignature,
      onMissingUsage: () => log.warn("Gemini ended a stream without usage, so it is metered as zero tokens"),
    });
    const first = await chunks.next();
    if (first.done === true) throw abortedError(call.signal);
    return { kind: "stream", first: first.value, rest: chunks, quant: null };
  }

  /** Sends the request and waits for response headers, which must arrive within the connect timeout. */
  async #post(body: string, stream: boolean, signal: AbortSignal, attemptController: AbortController): Promise<Response> {
    // NOTE: a non-stream response's headers come only after the whole completion is generated, so the
    // wait for them is bounded by the idle timeout as well. The connect timeout alone would cut long ones.
    const seconds = stream ? this.#config.connectTimeoutSeconds : Math.max(this.#config.connectTimeoutSeconds, this.#config.idleTimeoutSeconds);
    const timer = setTimeout(() => attemptController.abort(), seconds * 1000);
    try {
      return await this.#fetch(this.#url, {
        method: "POST",
        headers: {
          authorization: `Bearer ${this.#apiKey}`,
          "content-type": "application/json",
          accept: stream ? "text/event-stream" : "application/json",
        },
        body,
        signal,
      });
    } catch (error) {
      if (attemptController.signal.aborted) {
        throw upstreamFailure(504, "upstream_connect_timeout", `Gemini sent no response headers within ${seconds} s.`, { retryable: true, cause: error });
      }
      throw upstreamFailure(502, "upstream_unreachable", `Could not reach Gemini: ${describeNetworkError(error)}.`, { retryable: true, cause: error });
    } finally {
      clearTimeout(timer);
    }
  }

  #circuitOpenError(): BackendError {
    const coolDownSeconds = Math.ceil(this.#breaker.retryAfterMs / 1000);
    // A half-open circuit rejects while its one trial request is in flight; its outcome comes soon.
    const message =
      coolDownSeconds > 0
        ? `Overflow to Gemini is paused after repeated failures. It resumes with a trial request in ${coolDownSeconds} s.`
        : "Overflow to Gemini is paused while a trial request checks whether Gemini has recovered.";
    return new BackendError(503, errorBody(503, message, "overflow_unavailable"), { retryable: false, retryAfterSeconds: Math.max(1, coolDownSeconds) });
  }
}

/** Reports a failed request to the circuit, unless the failure is unrelated to Gemini's health. */
function settleFailure(permit: CircuitPermit, error: unknown, signal: AbortSignal): void {
  if (signal.aborted) permit.release();
  else if (!(error instanceof BackendError) || error.status >= 500 || error.status === 429) permit.failure();
  else permit.release();
}

/** Creates the rejection for a request its caller aborted; 499 is the status nginx logs for it. */
function abortedError(signal: AbortSignal): BackendError {
  return new BackendError(499, errorBody(499, "The request was aborted before Gemini responded.", "request_aborted"), {
    retryable: false,
    cause: signal.reason,
  });
}

/** Reads a whole body, aborting the request when it stays silent longer than the idle timeout. */
async function readText(response: Response, idleTimeoutMs: number, attemptController: AbortController): Promise<string> {
  const timer = setTimeout(() => attemptController.abort(), idleTimeoutMs);
  try {
    return await response.text();
  } catch (error) {
    if (attemptController.signal.aborted) {
      throw upstreamFailure(504, "upstream_idle_timeout", `Gemini sent nothing for ${idleTimeoutMs / 1000} s.`, { retryable: true, cause: error });
    }
    throw upstreamFailure(502, "upstream_stream_interrupted", "Gemini closed the connection before the response ended.", { retryable: true, cause: error });
  } finally {
    clearTimeout(timer);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw upstreamFailure(502, "upstream_invalid_response", "Gemini returned a completion that is not JSON.", { retryable: true, cause: error });
  }
}

function describeNetworkError(error: unknown): string {
  const cause = error instanceof Error ? error.cause : undefined;
  const code = typeof cause === "object" && cause !== null && "code" in cause ? cause.code : undefined;
  if (typeof code === "string") return code;
  return error instanceof Error ? error.message : "connection failed";
}

function sleep(milliseconds: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason as Error);
      return;
    }
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, milliseconds);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason as Error);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
