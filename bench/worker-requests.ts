import type { RequestSample } from "./load.ts";

/**
 * A schema whose one string must be longer than any reply the benchmark decodes, so structured replies
 * run to max_tokens exactly as free-text replies do and both decode the same number of tokens.
 */
export function longStringSchema(maxTokens: number): Record<string, unknown> {
  return {
    type: "object",
    properties: { story: { type: "string", minLength: maxTokens * 8 } },
    required: ["story"],
    additionalProperties: false,
  };
}

/**
 * Returns the user message of request `requestId`. The id comes first, so each prompt differs from any
 * earlier one right after the chat template's opening tokens, and no server can skip evaluating the
 * prompt by reusing its cache.
 */
export function promptText(requestId: number | string): string {
  return (
    `Request ${requestId}. Write a long story about a lighthouse keeper who finds a map in a bottle, ` +
    "and describe every island on the map in detail."
  );
}

export interface ChatRequestOptions {
  model: string;
  maxTokens: number;
  /** A JSON schema for `response_format`, or undefined for free text. */
  schema: Record<string, unknown> | undefined;
}

/** Builds an OpenAI chat completions body: greedy, streaming, with a usage chunk at the end. */
export function chatRequestBody(options: ChatRequestOptions, requestId: number | string): Record<string, unknown> {
  return {
    model: options.model,
    messages: [{ role: "user", content: promptText(requestId) }],
    max_tokens: options.maxTokens,
    temperature: 0,
    stream: true,
    stream_options: { include_usage: true },
    ...(options.schema === undefined
      ? {}
      : { response_format: { type: "json_schema", json_schema: { name: "story", strict: true, schema: options.schema } } }),
  };
}

interface StreamChunk {
  choices?: { delta?: { content?: string | null } }[];
  usage?: { prompt_tokens?: number; completion_tokens?: number } | null;
  error?: { message?: string };
}

/**
 * Posts a streaming chat completion and times it from the client's side: time to the first non-empty
 * content delta and time between the first and last ones. Token counts come from the usage chunk.
 */
export async function sendStreamingChat(baseUrl: string, body: Record<string, unknown>): Promise<RequestSample> {
  const started = performance.now();
  const response = await fetch(`${baseUrl}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  if (!response.ok || response.body === null) {
    throw new Error(`${baseUrl} responded with status ${response.status}: ${(await response.text()).slice(0, 500)}`);
  }

  let firstContentAt: number | undefined;
  let lastContentAt: number | undefined;
  let usage: StreamChunk["usage"];
  for await (const data of readServerSentEvents(response.body)) {
    if (data === "[DONE]") break;
    const chunk = JSON.parse(data) as StreamChunk;
    if (chunk.error !== undefined) throw new Error(`${baseUrl} sent an error event: ${chunk.error.message ?? data}`);
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices?.some((choice) => (choice.delta?.content ?? "") !== "")) {
      lastContentAt = performance.now();
      firstContentAt ??= lastContentAt;
    }
  }
  if (usage?.completion_tokens === undefined || usage.prompt_tokens === undefined) {
    throw new Error(`${baseUrl} ended the stream without a usage chunk`);
  }
  if (firstContentAt === undefined || lastContentAt === undefined) throw new Error(`${baseUrl} streamed no content`);
  return {
    timeToFirstTokenSeconds: (firstContentAt - started) / 1000,
    decodeSeconds: (lastContentAt - firstContentAt) / 1000,
    completionTokens: usage.completion_tokens,
    promptTokens: usage.prompt_tokens,
  };
}

/** Yields the `data:` payload of each event in a server-sent event stream. */
async function* readServerSentEvents(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffered = "";
  for await (const bytes of stream) {
    buffered += decoder.decode(bytes, { stream: true });
    let boundary: number;
    while ((boundary = buffered.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffered.slice(0, boundary);
      buffered = buffered.slice(boundary).replace(/^\r?\n\r?\n/, "");
      const data = event
        .split(/\r?\n/)
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice("data:".length).trimStart())
        .join("\n");
      if (data !== "") yield data;
    }
  }
}
