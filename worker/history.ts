import type { ChatHistoryItem, ChatModelFunctionCall, ChatModelResponse } from "node-llama-cpp";

import { contentText, type RawMessage } from "../api/chat-request.ts";
import { invalidRequest } from "../api/errors.ts";

/**
 * Converts OpenAI messages into node-llama-cpp's chat history. An assistant message's tool calls become
 * function calls on the model's response, and the `tool` messages after it supply their results, so the
 * chat wrapper renders a follow-up turn the way the model saw its own call.
 *
 * The returned history always ends with a model response for generation to continue: an empty one
 * after a user turn, or the assistant's own turn after tool results.
 */
export function toChatHistory(messages: readonly RawMessage[]): ChatHistoryItem[] {
  const history: ChatHistoryItem[] = [];
  const pendingCalls = new Map<string, { call: ChatModelFunctionCall; param: string }>();

  messages.forEach((message, index) => {
    const param = `messages[${index}]`;
    if (message.role !== "tool") requireResults(pendingCalls);

    switch (message.role) {
      case "system":
      case "developer":
        history.push({ type: "system", text: contentText(message.content, `${param}.content`) });
        break;
      case "user":
        history.push({ type: "user", text: contentText(message.content, `${param}.content`) });
        break;
      case "assistant":
        appendModelResponse(history, toModelResponse(message, param, pendingCalls));
        break;
      case "tool":
        attachResult(message, param, pendingCalls);
        break;
    }
  });
  requireResults(pendingCalls);

  if (history.at(-1)?.type !== "model") history.push({ type: "model", response: [] });
  return history;
}

/** Merges an assistant turn into a model response right before it, as after tool results. */
function appendModelResponse(history: ChatHistoryItem[], item: ChatModelResponse): void {
  const last = history.at(-1);
  if (last?.type === "model") last.response.push(...item.response);
  else history.push(item);
}

type AssistantMessage = Extract<RawMessage, { role: "assistant" }>;
type ToolMessage = Extract<RawMessage, { role: "tool" }>;

function toModelResponse(
  message: AssistantMessage,
  param: string,
  pendingCalls: Map<string, { call: ChatModelFunctionCall; param: string }>,
): ChatModelResponse {
  const response: ChatModelResponse["response"] = [];
  if (message.content != null) {
    const text = contentText(message.content, `${param}.content`);
    if (text !== "") response.push(text);
  }
  (message.tool_calls ?? []).forEach((toolCall, callIndex) => {
    const callParam = `${param}.tool_calls[${callIndex}]`;
    const call: ChatModelFunctionCall = {
      type: "functionCall",
      name: toolCall.function.name,
      params: parseArguments(toolCall.function.arguments, `${callParam}.function.arguments`),
      result: undefined,
      startsNewChunk: callIndex === 0,
    };
    pendingCalls.set(toolCall.id, { call, param: callParam });
    response.push(call);
  });
  return { type: "model", response };
}

function parseArguments(text: string, param: string): unknown {
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text) as unknown;
  } catch {
    throw invalidRequest(`'${param}' is not valid JSON. Send the arguments as a JSON object encoded in a string.`, param);
  }
}

function attachResult(
  message: ToolMessage,
  param: string,
  pendingCalls: Map<string, { call: ChatModelFunctionCall; param: string }>,
): void {
  const pending = pendingCalls.get(message.tool_call_id);
  if (pending === undefined) {
    throw invalidRequest(
      `'${param}.tool_call_id' is '${message.tool_call_id}', which matches no tool call of the assistant message before it. ` +
        "Each tool message must answer a tool call id from the preceding assistant message.",
      `${param}.tool_call_id`,
    );
  }
  pending.call.result = contentText(message.content, `${param}.content`);
  pendingCalls.delete(message.tool_call_id);
}

function requireResults(pendingCalls: Map<string, { call: ChatModelFunctionCall; param: string }>): void {
  const [first] = pendingCalls.entries();
  if (first === undefined) return;
  const [id, { param }] = first;
  throw invalidRequest(
    `'${param}' (id '${id}') has no tool message with its result. An assistant message with 'tool_calls' must be followed by one tool message per call.`,
    param,
  );
}
