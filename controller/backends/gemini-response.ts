import { randomUUID } from "node:crypto";

import type { components } from "../../api/generated.ts";
import { upstreamFailure } from "./gemini-errors.ts";
import { signatureOf } from "./gemini-signatures.ts";
import type { ChatCompletion, Usage } from "./types.ts";

/**
 * Repairs for Gemini's non-stream completions, and the helpers the stream repair shares: tool-call ids,
 * finish reasons and usage.
 */

export type FinishReason = components["schemas"]["FinishReason"];
type ToolCall = components["schemas"]["ToolCall"];

/** Usage as Gemini sends it; any field may be missing. */
export interface UpstreamUsage {
  prompt_tokens?: number;
  completion_tokens?: number;
  total_tokens?: number;
  prompt_tokens_details?: { cached_tokens?: number } | null;
}

export interface UpstreamToolCall {
  index?: number;
  id?: string;
  type?: string;
  function?: { name?: string; arguments?: string };
  extra_content?: unknown;
}

interface UpstreamCompletion {
  id?: string;
  created?: number;
  model?: string;
  choices?: {
    index?: number;
    message?: { content?: string | null; tool_calls?: UpstreamToolCall[] | null };
    finish_reason?: string | null;
  }[];
  usage?: UpstreamUsage | null;
}

/** Records a tool call's thought signature under the id the client receives. */
export type SignatureRecorder = (toolCallId: string, signature: string) => void;

const openAiFinishReasons = new Set<string>(["stop", "length", "tool_calls", "content_filter"]);
const filteredFinishReasons = new Set(["safety", "recitation", "blocklist", "prohibited_content", "spii", "image_safety"]);

export function newToolCallId(): string {
  return `call_${randomUUID().replaceAll("-", "")}`;
}

/**
 * Maps Gemini's finish reason to OpenAI's. A response with tool calls ends with `tool_calls` (Gemini sends
 * `stop`) unless it was cut by the token limit; Gemini's own names are mapped, anything else is `stop`.
 */
export function repairFinishReason(reason: string | null | undefined, hasToolCalls: boolean): FinishReason {
  const name = (reason ?? "stop").toLowerCase();
  if (name === "length" || name === "max_tokens") return "length";
  if (hasToolCalls) return "tool_calls";
  if (openAiFinishReasons.has(name)) return name as FinishReason;
  if (filteredFinishReasons.has(name)) return "content_filter";
  return "stop";
}

/**
 * Makes usage bill what Gemini bills: Gemini leaves thinking tokens out of `completion_tokens` but counts
 * them in `total_tokens`, and charges them as output, so `completion_tokens` becomes total − prompt.
 */
export function repairUsage(usage: UpstreamUsage): Usage {
  const promptTokens = usage.prompt_tokens ?? 0;
  const reportedCompletion = usage.completion_tokens ?? 0;
  const completionTokens = Math.max(reportedCompletion, (usage.total_tokens ?? 0) - promptTokens);
  const repaired: Usage = {
    prompt_tokens: promptTokens,
    completion_tokens: completionTokens,
    total_tokens: promptTokens + completionTokens,
  };
  const cachedTokens = usage.prompt_tokens_details?.cached_tokens;
  if (typeof cachedTokens === "number") repaired.prompt_tokens_details = { cached_tokens: cachedTokens };
  return repaired;
}

/**
 * Repairs a non-stream completion. Each tool call gets an id when Gemini sent an empty one, gets the
 * `function` type, and loses `extra_content` once its signature is recorded. Usage and finish reasons are
 * repaired too, and `hadUsage` is false when Gemini sent no usage, so the caller can log it.
 */
export function repairCompletion(raw: unknown, recordSignature: SignatureRecorder): { completion: ChatCompletion; hadUsage: boolean } {
  if (typeof raw !== "object" || raw === null || !Array.isArray((raw as UpstreamCompletion).choices)) {
    throw upstreamFailure(502, "upstream_invalid_response", "Gemini returned a completion without 'choices'.", { retryable: true });
  }
  const upstream = raw as UpstreamCompletion;
  const choices = (upstream.choices ?? []).map((choice, position) => {
    const toolCalls = (choice.message?.tool_calls ?? []).map((toolCall) => repairToolCall(toolCall, recordSignature));
    const message: ChatCompletion["choices"][number]["message"] = {
      role: "assistant",
      content: choice.message?.content ?? null,
      refusal: null,
    };
    if (toolCalls.length > 0) message.tool_calls = toolCalls;
    return {
      index: choice.index ?? position,
      message,
      finish_reason: repairFinishReason(choice.finish_reason, toolCalls.length > 0),
      logprobs: null,
    };
  });

  const completion: ChatCompletion = {
    id: upstream.id ?? `chatcmpl-${randomUUID()}`,
    object: "chat.completion",
    created: upstream.created ?? Math.floor(Date.now() / 1000),
    model: upstream.model ?? "",
    choices,
    usage: repairUsage(upstream.usage ?? {}),
  };
  return { completion, hadUsage: upstream.usage != null };
}

function repairToolCall(toolCall: UpstreamToolCall, recordSignature: SignatureRecorder): ToolCall {
  const id = toolCall.id !== undefined && toolCall.id.length > 0 ? toolCall.id : newToolCallId();
  const signature = signatureOf(toolCall);
  if (signature !== undefined) recordSignature(id, signature);
  return {
    id,
    type: "function",
    function: { name: toolCall.function?.name ?? "", arguments: toolCall.function?.arguments ?? "" },
  };
}
