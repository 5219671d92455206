/**
 * A stand-in for Gemini's OpenAI-compatible endpoint (`POST {baseUrl}chat/completions`), modelled on
 * Google's documentation and on responses observed from gemini-3-flash-preview. It is not Gemini: it
 * generates no text of its own and reproduces only the behaviour the backend's tests depend on.
 *
 * Reproduced deviations from OpenAI's API:
 * - errors are a JSON array, `[{"error": {"code", "message", "status", "details"?}}]`;
 * - unknown top-level fields are rejected with 400, and `reasoning_effort` takes none/low/medium/high only;
 * - streamed tool-call deltas have no `index`, non-stream tool calls have an empty `id`;
 * - the first tool call of each response carries `extra_content.google.thought_signature`, and a request
 *   whose current turn replays a call without a signature this server issued is rejected with 400
 *   (Gemini's documented `skip_thought_signature_validator` value is accepted in its place);
 * - usage rides on the last content chunk whether or not it was requested, and `completion_tokens`
 *   leaves out thinking tokens, so `total_tokens` exceeds prompt plus completion;
 * - the finish reason is `stop` after tool calls, and appears only on the last content chunk;
 * - 429 RESOURCE_EXHAUSTED carries the wait in a `google.rpc.RetryInfo` detail, not in a header.
 */
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

export type MockBehaviour =
  | { kind: "text"; text: string }
  /** One call, or several parallel ones when `parallel` lists more. */
  | { kind: "tool_call"; name: string; arguments: string; parallel?: { name: string; arguments: string }[] }
  | { kind: "429"; retryDelaySeconds?: number }
  | { kind: "503" }
  | { kind: "error"; status: number; googleStatus: string; message: string }
  /** Holds back the response headers, then responds with the default text. */
  | { kind: "slow"; firstByteDelayMs: number }
  /** Destroys the socket after this many stream chunks (a non-stream request gets no response at all). */
  | { kind: "cut"; afterChunks: number }
  /** Stops writing after this many stream chunks and keeps the connection open. */
  | { kind: "stall"; afterChunks: number };

export interface RecordedRequest {
  body: Record<string, unknown>;
  headers: IncomingHttpHeaders;
  /** Set when the connection closed before the response was complete: the client left, or a `cut`. */
  disconnected: boolean;
}

export interface MockGeminiOptions {
  apiKey?: string;
  model?: string;
  /** Delay before every response's headers. */
  latencyMs?: number;
  /** Delay between stream chunks. */
  chunkIntervalMs?: number;
  /** Thinking tokens added to `total_tokens` but not to `completion_tokens`. */
  thoughtTokens?: number;
}

/** Top-level fields the mock accepts; any other is rejected the way Gemini rejects `frequency_penalty`. */
export const acceptedFields = new Set([
  "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
  "stop", "n", "tools", "tool_choice", "response_format", "reasoning_effort",
]);

export const defaultText = "Overflow answers arrive from the mock in several small chunks.";
const unsignedCallSignature = "skip_thought_signature_validator";
const reasoningEfforts = new Set(["none", "low", "medium", "high"]);

interface ToolCallMessage {
  role?: string;
  tool_calls?: { function?: { name?: string }; extra_content?: { google?: { thought_signature?: string } } }[];
}

export class MockGemini {
  readonly apiKey: string;
  readonly model: string;
  /** Every request received, in order, rejected ones included. */
  readonly requests: RecordedRequest[] = [];
  /** Signatures issued, in order. */
  readonly issuedSignatures: string[] = [];
  latencyMs: number;
  chunkIntervalMs: number;
  thoughtTokens: number;
  readonly #server: Server;
  readonly #behaviours: MockBehaviour[] = [];
  readonly #timers = new Set<NodeJS.Timeout>();
  #baseUrl = "";
  #responseCount = 0;
  #closing: Promise<void> | undefined;

  private constructor(options: MockGeminiOptions) {
    this.apiKey = options.apiKey ?? "mock-gemini-key";
    this.model = options.model ?? "gemini-3-flash-preview";
    this.latencyMs = options.latencyMs ?? 0;
    this.chunkIntervalMs = options.chunkIntervalMs ?? 0;
    this.thoughtTokens = options.thoughtTokens ?? 24;
    this.#server = createServer((request, response) => {
      this.#handle(request, response).catch((error: unknown) => {
        if (!response.headersSent) sendError(response, 500, "INTERNAL", `mock failure: ${String(error)}`);
        else response.destroy();
      });
    });
  }

  /** Starts a mock on 127.0.0.1 with a port the kernel picks. */
  static async start(options: MockGeminiOptions = {}): Promise<MockGemini> {
    const mock = new MockGemini(options);
    mock.#server.listen(0, "127.0.0.1");
    await once(mock.#server, "listening");
    const address = mock.#server.address() as AddressInfo;
    mock.#baseUrl = `http://127.0.0.1:${address.port}/v1beta/openai/`;
    return mock;
  }

  /** The base URL a client is configured with, ending in `/v1beta/openai/`. */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  /** Queues behaviours for the next valid requests, one each; with an empty queue the mock responds with `defaultText`. */
  enqueue(...behaviours: MockBehaviour[]): void {
    this.#behaviours.push(...behaviours);
  }

  /** Stops listening and drops open connections, stalled ones included. Later calls return the same promise. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const timer of this.#timers) clearTimeout(timer);
      this.#timers.clear();
      const closed = once(this.#server, "close");
      this.#server.close();
      this.#server.closeAllConnections();
      await closed;
    })();
    return this.#closing;
  }

  async #handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    const text = await readBody(request);
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    const record: RecordedRequest = { body: isObject(body) ? body : { unparsed: text }, headers: request.headers, disconnected: false };
    this.requests.push(record);
    response.on("close", () => {
      if (!response.writableFinished) record.disconnected = true;
    });

    if (request.method !== "POST" || request.url !== new URL(`${this.#baseUrl}chat/completions`).pathname) {
      sendError(response, 404, "NOT_FOUND", `The path ${request.url ?? ""} does not exist.`);
      return;
    }
    if (request.headers.authorization !== `Bearer ${this.apiKey}`) {
      sendError(response, 401, "UNAUTHENTICATED", "The API key is not valid. Pass a valid API key.");
      return;
    }
    if (!isObject(body)) {
      sendError(response, 400, "INVALID_ARGUMENT", "Invalid JSON payload received.");
      return;
    }
    const rejection = this.#validate(body);
    if (rejection !== undefined) {
      sendError(response, rejection.status, rejection.googleStatus, rejection.message);
      return;
    }
    await this.#respond(body, this.#behaviours.shift() ?? { kind: "text", text: defaultText }, response);
  }

  #validate(body: Record<string, unknown>): { status: number; googleStatus: string; message: string } | undefined {
    const unknown = Object.keys(body).find((field) => !acceptedFields.has(field));
    if (unknown !== undefined) {
      return { status: 400, googleStatus: "INVALID_ARGUMENT", message: `Invalid JSON payload received. Unknown name "${unknown}": Cannot find field.` };
    }
    if (body.model !== this.model) {
      return { status: 404, googleStatus: "NOT_FOUND", message: `models/${String(body.model)} is not found for API version v1beta.` };
    }
    const effort = body.reasoning_effort;
    if (effort !== undefined && (typeof effort !== "string" || !reasoningEfforts.has(effort))) {
      return { status: 400, googleStatus: "INVALID_ARGUMENT", message: `Invalid reasoning effort: ${JSON.stringify(effort)}. Use none, low, medium or high.` };
    }
    const unsigned = this.#unsignedReplay(Array.isArray(body.messages) ? (body.messages as ToolCallMessage[]) : []);
    if (unsigned !== undefined) {
      return { status: 400, googleStatus: "INVALID_ARGUMENT", message: `Function call \`${unsigned}\` is missing a thought_signature.` };
    }
    return undefined;
  }

  /**
   * Returns the name of the first call in the current turn (after the last user message) whose step lacks
   * a valid signature. As Gemini does, only the first call of each assistant message is checked.
   */
  #unsignedReplay(messages: ToolCallMessage[]): string | undefined {
    const lastUser = messages.findLastIndex((message) => message.role === "user");
    for (const message of messages.slice(lastUser + 1)) {
      const first = message.role === "assistant" ? message.tool_calls?.[0] : undefined;
      if (first === undefined) continue;
      const signature = first.extra_content?.google?.thought_signature;
      const valid = signature === unsignedCallSignature || (signature !== undefined && this.issuedSignatures.includes(signature));
      if (!valid) return first.function?.name ?? "";
    }
    return undefined;
  }

  async #respond(body: Record<string, unknown>, behaviour: MockBehaviour, response: ServerResponse): Promise<void> {
    await this.#delay(behaviour.kind === "slow" ? behaviour.firstByteDelayMs : this.latencyMs);
    if (response.destroyed) return;
    if (behaviour.kind === "429") {
      sendError(response, 429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", [
        { "@type": "type.googleapis.com/google.rpc.QuotaFailure", violations: [{ quotaMetric: "generate_content_requests", quotaId: "PerMinute" }] },
        { "@type": "type.googleapis.com/google.rpc.RetryInfo", retryDelay: `${behaviour.retryDelaySeconds ?? 19}s` },
      ]);
      return;
    }
    if (behaviour.kind === "503") {
      sendError(response, 503, "UNAVAILABLE", "The model is overloaded. Try again later.");
      return;
    }
    if (behaviour.kind === "error") {
      sendError(response, behaviour.status, behaviour.googleStatus, behaviour.message);
      return;
    }
    const stream = body.stream === true;
    if (!stream && behaviour.kind === "cut") {
      response.socket?.destroy();
      return;
    }
    if (!stream && behaviour.kind === "stall") return;

    const answer = this.#answer(body, behaviour);
    if (stream) await this.#writeStream(answer, behaviour, response);
    else sendJson(response, 200, this.#completion(answer));
  }

  #answer(body: Record<string, unknown>, behaviour: MockBehaviour): Answer {
    this.#responseCount += 1;
    const promptTokens = countWords(JSON.stringify(body.messages ?? []));
    const base = { id: `mock-${this.#responseCount}`, created: Math.floor(Date.now() / 1000), promptTokens };
    if (behaviour.kind !== "tool_call") {
      const text = behaviour.kind === "text" ? behaviour.text : defaultText;
      return { ...base, text, calls: [], completionTokens: countWords(text) };
    }
    const calls = [{ name: behaviour.name, arguments: behaviour.arguments }, ...(behaviour.parallel ?? [])].map((call, position) => {
      const signature = position === 0 ? this.#issueSignature() : undefined;
      return { ...call, signature };
    });
    return { ...base, text: "", calls, completionTokens: 8 * calls.length };
  }

  #issueSignature(): string {
    const signature = randomBytes(24).toString("base64");
    this.issuedSignatures.push(signature);
    return signature;
  }

  #usage(answer: Answer): Record<string, number> {
    return {
      prompt_tokens: answer.promptTokens,
      completion_tokens: answer.completionTokens,
      total_tokens: answer.promptTokens + answer.completionTokens + this.thoughtTokens,
    };
  }

  #completion(answer: Answer): Record<string, unknown> {
    const message: Record<string, unknown> = { role: "assistant", content: answer.calls.length > 0 ? null : answer.text };
    if (answer.calls.length > 0) message.tool_calls = answer.calls.map((call) => toolCall(call, ""));
    return {
      id: answer.id,
      object: "chat.completion",
      created: answer.created,
      model: this.model,
      choices: [{ index: 0, message, finish_reason: "stop" }],
      usage: this.#usage(answer),
    };
  }

  async #writeStream(answer: Answer, behaviour: MockBehaviour, response: ServerResponse): Promise<void> {
    response.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    response.flushHeaders();
    const chunks = this.#streamChunks(answer);
    for (const [position, chunk] of chunks.entries()) {
      if ((behaviour.kind === "cut" || behaviour.kind === "stall") && position === behaviour.afterChunks) {
        if (behaviour.kind === "cut") response.socket?.destroy();
        return;
      }
      if (position > 0) await this.#delay(this.chunkIntervalMs);
      if (response.destroyed) return;
      // Waiting for the flush makes a later `cut` lose nothing already written.
      await new Promise((resolve) => response.write(`data: ${JSON.stringify(chunk)}\n\n`, resolve));
    }
    response.end("data: [DONE]\n\n");
  }

  #streamChunks(answer: Answer): Record<string, unknown>[] {
    const header = { id: answer.id, object: "chat.completion.chunk", created: answer.created, model: this.model };
    const deltas: Record<string, unknown>[] =
      answer.calls.length > 0
        ? [{ role: "assistant", tool_calls: answer.calls.map((call) => toolCall(call, `function-call-${randomBytes(8).toString("hex")}`)) }]
        : splitText(answer.text).map((piece) => ({ role: "assistant", content: piece }));
    return deltas.map((delta, position) => {
      if (position < deltas.length - 1) return { ...header, choices: [{ index: 0, delta }] };
      return { ...header, choices: [{ index: 0, delta, finish_reason: "stop" }], usage: this.#usage(answer) };
    });
  }

  async #delay(milliseconds: number): Promise<void> {
    if (milliseconds <= 0) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.#timers.delete(timer);
        resolve();
      }, milliseconds);
      this.#timers.add(timer);
    });
  }
}

interface Answer {
  id: string;
  created: number;
  text: string;
  calls: { name: string; arguments: string; signature: string | undefined }[];
  promptTokens: number;
  completionTokens: number;
}

/** A tool call as Gemini writes it: no `index`, and the signature in `extra_content`. */
function toolCall(call: Answer["calls"][number], id: string): Record<string, unknown> {
  const written: Record<string, unknown> = { id, type: "function", function: { name: call.name, arguments: call.arguments } };
  if (call.signature !== undefined) written.extra_content = { google: { thought_signature: call.signature } };
  return written;
}

function sendError(response: ServerResponse, status: number, googleStatus: string, message: string, details?: unknown[]): void {
  const error: Record<string, unknown> = { code: status, message, status: googleStatus };
  if (details !== undefined) error.details = details;
  sendJson(response, status, [{ error }]);
}

function sendJson(response: ServerResponse, status: number, payload: unknown): void {
  response.writeHead(status, { "content-type": "application/json; charset=UTF-8" });
  response.end(JSON.stringify(payload));
}

async function readBody(request: IncomingMessage): Promise<string> {
  const parts: Buffer[] = [];
  for await (const part of request) parts.push(part as Buffer);
  return Buffer.concat(parts).toString("utf8");
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Splits text into pieces of about two words, keeping the spaces, so a stream has several chunks. */
function splitText(text: string): string[] {
  const words = text.match(/\S+\s*/g) ?? [text];
  const pieces: string[] = [];
  for (let start = 0; start < words.length; start += 2) pieces.push(words.slice(start, start + 2).join(""));
  return pieces;
}

function countWords(text: string): number {
  return Math.max(1, text.split(/\s+/).filter((word) => word.length > 0).length);
}
