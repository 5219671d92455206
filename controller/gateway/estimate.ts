import type { RawChatRequest } from "../../api/chat-request.ts";

/**
 * Estimates a request's prompt tokens without a tokenizer: about four characters per token for English
 * text and JSON. Admission only uses it to send obviously oversized prompts straight to Gemini; the
 * worker's exact count decides the rest, and billing never uses it for a finished request.
 */
export function estimatePromptTokens(request: RawChatRequest): number {
  let characters = 0;
  for (const message of request.messages) {
    characters += 8;
    if (typeof message.content === "string") characters += message.content.length;
    else if (Array.isArray(message.content)) characters += JSON.stringify(message.content).length;
    if (message.role === "assistant" && message.tool_calls) characters += JSON.stringify(message.tool_calls).length;
  }
  if (request.tools !== undefined) characters += JSON.stringify(request.tools).length;
  return Math.ceil(characters / 4);
}

/** Estimates tokens of generated text, for a stream cut before its usage arrived. */
export function estimateTextTokens(text: string): number {
  return Math.ceil(text.length / 4);
}
