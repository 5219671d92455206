import type { RawChatRequest } from "../../api/chat-request.ts";
import type { ApiErrorBody } from "../../api/errors.ts";
import type { components } from "../../api/generated.ts";

export type ChatCompletion = components["schemas"]["CreateChatCompletionResponse"];
export type ChatCompletionChunk = components["schemas"]["CreateChatCompletionStreamResponse"];
export type Usage = components["schemas"]["CompletionUsage"] & { prompt_tokens_details?: { cached_tokens?: number } };

export type BackendName = "local" | "gemini";

/** One request as the gateway hands it to a backend. */
export interface BackendCall {
  /**
   * The client's validated request. The backend sends it with its own model id and, for streams, with
   * `stream_options.include_usage` set, whatever the client asked: the gateway meters every stream
   * and strips the usage chunk again when the client did not request it.
   */
  request: RawChatRequest;
  requestId: string;
  /** Aborts the upstream request, for a client that went away or a shutdown. */
  signal: AbortSignal;
}

/**
 * A backend's reply, available once the first byte arrived: a whole completion, or a stream whose first
 * chunk has already been read. Everything that fails before this point is a `BackendError` and may be
 * retried or overflowed; a failure while iterating `rest` reaches the client as a stream error event.
 */
export type BackendReply =
  | { kind: "completion"; completion: ChatCompletion; quant: string | null }
  | {
      kind: "stream";
      first: ChatCompletionChunk;
      rest: AsyncIterable<ChatCompletionChunk>;
      quant: string | null;
      /** Prompt tokens as the backend counted them before generating, when it reports them up front. */
      promptTokens?: number;
    };

/**
 * A failed upstream call, carried as the OpenAI error body the client should see. `retryable` marks
 * failures worth another attempt (429, 503, connection errors); `retryAfterSeconds` is the upstream's
 * own hint when it gave one.
 */
export class BackendError extends Error {
  override name = "BackendError";
  readonly status: number;
  readonly body: ApiErrorBody;
  readonly retryable: boolean;
  readonly retryAfterSeconds: number | undefined;

  constructor(
    status: number,
    body: ApiErrorBody,
    options: { retryable: boolean; retryAfterSeconds?: number; cause?: unknown },
  ) {
    super(body.error.message, { cause: options.cause });
    this.status = status;
    this.body = body;
    this.retryable = options.retryable;
    this.retryAfterSeconds = options.retryAfterSeconds;
  }
}

export interface Backend {
  readonly name: BackendName;
  /** Sends one request. Rejects with `BackendError` when it fails before the first byte. */
  send(call: BackendCall): Promise<BackendReply>;
}
