/**
 * Gemini 3 returns a `thought_signature` with each step's function calls and rejects (400) a later request
 * whose current turn replays those calls without it. OpenAI clients drop the field, which only Gemini
 * sends, and Spillway's request validation strips it too, so the backend keeps the signatures it saw,
 * keyed by the tool-call id the client received, and puts them back on the way out.
 */

/**
 * The value Gemini documents for replaying function calls it did not sign, such as calls a local model
 * made before the conversation overflowed, or calls whose signature this process no longer holds.
 */
export const unsignedCallSignature = "skip_thought_signature_validator";

/** A bounded map from tool-call id to thought signature that evicts the least recently used entry. */
export class SignatureCache {
  readonly #maxEntries: number;
  readonly #entries = new Map<string, string>();

  constructor(maxEntries: number) {
    if (!Number.isInteger(maxEntries) || maxEntries < 1) {
      throw new RangeError(`maxEntries must be a positive integer, got ${maxEntries}`);
    }
    this.#maxEntries = maxEntries;
  }

  get size(): number {
    return this.#entries.size;
  }

  get(toolCallId: string): string | undefined {
    const signature = this.#entries.get(toolCallId);
    if (signature === undefined) return undefined;
    // Map keeps insertion order, so moving a hit to the end makes the first key the least recently used.
    this.#entries.delete(toolCallId);
    this.#entries.set(toolCallId, signature);
    return signature;
  }

  set(toolCallId: string, signature: string): void {
    this.#entries.delete(toolCallId);
    this.#entries.set(toolCallId, signature);
    if (this.#entries.size > this.#maxEntries) {
      const oldest = this.#entries.keys().next();
      if (oldest.done !== true) this.#entries.delete(oldest.value);
    }
  }
}

/** The `extra_content` Gemini puts on a tool call. */
export interface GeminiExtraContent {
  google?: { thought_signature?: string };
}

/** Reads the thought signature from a tool call or tool-call delta, if it has one. */
export function signatureOf(toolCall: { extra_content?: unknown }): string | undefined {
  const extra = toolCall.extra_content as GeminiExtraContent | undefined;
  const signature = extra?.google?.thought_signature;
  return typeof signature === "string" && signature.length > 0 ? signature : undefined;
}
