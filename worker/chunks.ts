import { randomBytes } from "node:crypto";

import type { components } from "../api/generated.ts";
import type { FinishReason, Generation, GenerationListener } from "./generate.ts";
import type { SseWriter } from "../api/sse.ts";

type Completion = components["schemas"]["CreateChatCompletionResponse"];
type Chunk = components["schemas"]["CreateChatCompletionStreamResponse"];
type Delta = NonNullable<Chunk["choices"][number]["delta"]>;

export function newCompletionId(): string {
  return `chatcmpl-${randomBytes(15).toString("base64url")}`;
}

/** Builds the non-stream response body. `choices[0].index` is always 0 because one choice is served. */
export function completionBody(id: string, created: number, model: string, generation: Generation): Completion {
  const hasToolCalls = generation.toolCalls.length > 0;
  return {
    id,
    object: "chat.completion",
    created,
    model,
    choices: [
      {
        index: 0,
        message: {
          role: "assistant",
          content: hasToolCalls && generation.content === "" ? null : generation.content,
          refusal: null,
          ...(hasToolCalls
            ? {
                tool_calls: generation.toolCalls.map((call) => ({
                  id: call.id,
                  type: "function" as const,
                  function: { name: call.name, arguments: call.arguments },
                })),
              }
            : {}),
        },
        finish_reason: generation.finishReason,
        logprobs: null,
      },
    ],
    usage: usageOf(generation),
  };
}

function usageOf(generation: Generation) {
  return {
    prompt_tokens: generation.promptTokens,
    completion_tokens: generation.completionTokens,
    total_tokens: generation.promptTokens + generation.completionTokens,
  };
}

/**
 * Writes a completion as OpenAI stream chunks. The role comes first, then content and tool-call fragments
 * as they decode, each with `finish_reason: null`. A closing chunk has an empty delta and the finish
 * reason. Only when the client requested it, one usage chunk with `choices: []` precedes `[DONE]`.
 */
export class ChunkStream implements GenerationListener {
  readonly #writer: SseWriter;
  readonly #base: { id: string; object: "chat.completion.chunk"; created: number; model: string };
  readonly #includeUsage: boolean;

  constructor(writer: SseWriter, id: string, created: number, model: string, includeUsage: boolean) {
    this.#writer = writer;
    this.#base = { id, object: "chat.completion.chunk", created, model };
    this.#includeUsage = includeUsage;
  }

  start(): void {
    this.#sendDelta({ role: "assistant", content: "" }, null);
  }

  text(delta: string): void {
    this.#sendDelta({ content: delta }, null);
  }

  toolCallStart(index: number, id: string, name: string): void {
    this.#sendDelta({ tool_calls: [{ index, id, type: "function", function: { name, arguments: "" } }] }, null);
  }

  toolCallArguments(index: number, fragment: string): void {
    this.#sendDelta({ tool_calls: [{ index, function: { arguments: fragment } }] }, null);
  }

  finish(generation: Generation): void {
    this.#sendDelta({}, generation.finishReason);
    if (this.#includeUsage) this.#writer.send({ ...this.#base, choices: [], usage: usageOf(generation) } satisfies Chunk);
    this.#writer.finish();
  }

  #sendDelta(delta: Delta, finishReason: FinishReason | null): void {
    const chunk: Chunk = {
      ...this.#base,
      choices: [{ index: 0, delta, finish_reason: finishReason, logprobs: null }],
      ...(this.#includeUsage ? { usage: null } : {}),
    };
    this.#writer.send(chunk);
  }
}

/** A listener for the non-stream path, which only needs the final `Generation`. */
export const ignoreOutput: GenerationListener = {
  text() {},
  toolCallStart() {},
  toolCallArguments() {},
};
