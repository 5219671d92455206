import type { RawChatRequest, RawMessage } from "../../api/chat-request.ts";
import { unsignedCallSignature, type SignatureCache } from "./gemini-signatures.ts";

/**
 * Top-level fields sent to Gemini's OpenAI-compatible endpoint. Gemini rejects any field it does not know
 * with 400 "Unknown name" (seen for `frequency_penalty` and `top_k`), so every other field of the client's
 * request is dropped. The set is what Google's OpenAI compatibility pages (ai.google.dev and Vertex AI)
 * list as supported and Spillway's request schema accepts, less `frequency_penalty` and `presence_penalty`:
 * the Vertex AI page lists them, but the Gemini API endpoint rejects them.
 */
export const forwardedFields = [
  "model",
  "messages",
  "stream",
  "stream_options",
  "max_tokens",
  "max_completion_tokens",
  "temperature",
  "top_p",
  "stop",
  "n",
  "tools",
  "tool_choice",
  "response_format",
  "reasoning_effort",
] as const;

// NOTE: `seed` is left out as well, because the one page seen listing it is the Vertex AI page that also
// lists the rejected penalties. Forward it once a request with `seed` is seen to pass on the Gemini API.

/** Gemini's accepted `reasoning_effort` values; Gemini 3 always thinks a little, whatever the value. */
const reasoningEfforts = new Set(["none", "low", "medium", "high"]);

export interface GeminiRequestBody {
  model: string;
  messages: GeminiMessage[];
  stream?: boolean;
  stream_options?: { include_usage: true };
  [field: string]: unknown;
}

/** An OpenAI message as Gemini takes it: `developer` becomes `system`, tool calls may carry `extra_content`. */
export type GeminiMessage = Record<string, unknown> & { role: string };

export interface TranslatedRequest {
  body: GeminiRequestBody;
  /** Client fields that were not forwarded, for a debug log line (names only, never values). */
  droppedFields: string[];
  /** Tool calls that went out with Gemini's unsigned-call value because no signature was known. */
  unsignedToolCalls: number;
}

/**
 * Builds the body Gemini accepts from a validated client request: the configured model id, the forwarded
 * fields only, usage always requested on streams, `reasoning_effort` mapped to Gemini's values and thought
 * signatures put back on replayed tool calls.
 */
export function toGeminiRequest(request: RawChatRequest, model: string, signatures: SignatureCache): TranslatedRequest {
  const body: GeminiRequestBody = { model, messages: [] };
  const droppedFields: string[] = [];
  const forwarded = new Set<string>(forwardedFields);

  for (const [field, value] of Object.entries(request)) {
    if (value === undefined || value === null) continue;
    if (forwarded.has(field)) body[field] = value;
    else droppedFields.push(field);
  }

  body.model = model;
  if (request.stream === true) {
    body.stream = true;
    body.stream_options = { include_usage: true };
  } else {
    delete body.stream;
    delete body.stream_options;
  }

  const effort = geminiReasoningEffort(request.reasoning_effort);
  if (effort === undefined) delete body.reasoning_effort;
  else body.reasoning_effort = effort;
  if (request.reasoning_effort != null && effort === undefined) droppedFields.push("reasoning_effort");

  const { messages, unsignedToolCalls } = toGeminiMessages(request.messages, signatures);
  body.messages = messages;
  return { body, droppedFields, unsignedToolCalls };
}

/** Maps OpenAI's `reasoning_effort` to Gemini's: `minimal` becomes `low`, values Gemini rejects are dropped. */
export function geminiReasoningEffort(effort: string | null | undefined): string | undefined {
  if (effort == null) return undefined;
  if (effort === "minimal") return "low";
  return reasoningEfforts.has(effort) ? effort : undefined;
}

function toGeminiMessages(messages: RawMessage[], signatures: SignatureCache): { messages: GeminiMessage[]; unsignedToolCalls: number } {
  let unsignedToolCalls = 0;
  const translated = messages.map((message): GeminiMessage => {
    // Google's compatibility pages list system, user, assistant and tool messages, not developer ones.
    if (message.role === "developer") return { ...message, role: "system" };
    if (message.role !== "assistant" || message.tool_calls == null || message.tool_calls.length === 0) return { ...message };

    const toolCalls = message.tool_calls.map((toolCall, index) => {
      const signature = signatures.get(toolCall.id);
      if (signature !== undefined) return { ...toolCall, extra_content: { google: { thought_signature: signature } } };
      // Gemini checks the first call of each step only: later parallel calls never carried a signature.
      if (index > 0) return { ...toolCall };
      unsignedToolCalls += 1;
      return { ...toolCall, extra_content: { google: { thought_signature: unsignedCallSignature } } };
    });
    return { ...message, tool_calls: toolCalls };
  });
  return { messages: translated, unsignedToolCalls };
}
