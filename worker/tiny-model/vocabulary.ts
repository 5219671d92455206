/**
 * Byte-level BPE vocabulary in the GPT-2 format that llama.cpp reads from
 * `tokenizer.ggml.*`: one token per byte, a few merges, then the ChatML control tokens.
 */

/** Values of `tokenizer.ggml.token_type` (llama.cpp's `llama_token_type`). */
const tokenTypes = { normal: 1, control: 3 } as const;

/**
 * Pairs merged in rank order, written as "left right" in GPT-2 byte-to-unicode text,
 * where "Ġ" is the space byte. A merge may only use tokens defined before it.
 */
const merges = [
  "Ġ t", "h e", "i n", "e r", "a n", "Ġ a", "o n", "r e",
  "Ġ s", "e n", "a t", "o r", "Ġt he", "e s", "Ġ w", "o u",
  "i s", "Ġ o", "i t", "Ġ b", "e d", "n d", "in g", "Ġ q",
] as const;

export const specialTokenTexts = {
  endOfText: "<|endoftext|>",
  messageStart: "<|im_start|>",
  messageEnd: "<|im_end|>",
} as const;

export interface Vocabulary {
  /** Token texts indexed by id; ids 0 to 255 are the single bytes 0 to 255. */
  tokens: readonly string[];
  tokenTypes: readonly number[];
  merges: readonly string[];
  /** Whether a token decodes to printable ASCII or a newline, indexed by id. */
  printable: readonly boolean[];
  endOfTextId: number;
  messageStartId: number;
  messageEndId: number;
}

export function buildVocabulary(): Vocabulary {
  const byteTexts = byteToUnicodeTexts();
  const byteOfText = new Map(byteTexts.map((text, byte) => [text, byte]));
  const tokens: string[] = [...byteTexts];
  const printable: boolean[] = byteTexts.map((_, byte) => isPrintableByte(byte));

  for (const merge of merges) {
    const [left = "", right = ""] = merge.split(" ");
    if (!tokens.includes(left) || !tokens.includes(right)) {
      throw new Error(`merge "${merge}" uses a token that is not defined before it`);
    }
    const text = left + right;
    tokens.push(text);
    printable.push([...text].every((character) => isPrintableByte(byteOfText.get(character) ?? -1)));
  }

  const endOfTextId = tokens.push(specialTokenTexts.endOfText) - 1;
  const messageStartId = tokens.push(specialTokenTexts.messageStart) - 1;
  const messageEndId = tokens.push(specialTokenTexts.messageEnd) - 1;
  printable.push(false, false, false);

  return {
    tokens,
    tokenTypes: tokens.map((_, id) => (id >= endOfTextId ? tokenTypes.control : tokenTypes.normal)),
    merges,
    printable,
    endOfTextId,
    messageStartId,
    messageEndId,
  };
}

function isPrintableByte(byte: number): boolean {
  return (byte >= 0x20 && byte <= 0x7e) || byte === 0x0a;
}

/**
 * Returns GPT-2's byte-to-unicode table: bytes that are visible Latin-1 characters map
 * to themselves, and every other byte maps to the next unused code point from 256 on,
 * so no token text contains whitespace or control characters.
 */
function byteToUnicodeTexts(): string[] {
  const isVisible = (byte: number): boolean =>
    (byte >= 0x21 && byte <= 0x7e) || (byte >= 0xa1 && byte <= 0xac) || (byte >= 0xae && byte <= 0xff);
  const texts: string[] = [];
  let nextCodePoint = 256;
  for (let byte = 0; byte < 256; byte++) {
    texts.push(String.fromCodePoint(isVisible(byte) ? byte : nextCodePoint++));
  }
  return texts;
}

/**
 * ChatML chat template for `tokenizer.chat_template`. Every role (system, user,
 * assistant, tool) renders as `<|im_start|>role\ncontent<|im_end|>\n`, and
 * `add_generation_prompt` appends the assistant header that a reply continues.
 */
export const chatMlTemplate = [
  "{%- for message in messages -%}",
  "{{- '<|im_start|>' + message['role'] + '\\n' + (message['content'] or '') + '<|im_end|>\\n' -}}",
  "{%- endfor -%}",
  "{%- if add_generation_prompt -%}",
  "{{- '<|im_start|>assistant\\n' -}}",
  "{%- endif -%}",
].join("\n");
