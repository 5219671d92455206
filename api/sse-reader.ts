/**
 * Reads a server-sent event stream and yields each event's `data` field, `[DONE]` included. Multi-line
 * data fields are joined with newlines, as the SSE specification requires, and other fields are ignored. The body
 * may be a web stream (a fetch response) or a Node stream (a `node:http` response).
 */
export async function* readSseData(body: AsyncIterable<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const bytes of body) {
    buffer += decoder.decode(bytes, { stream: true });
    let boundary = findEventEnd(buffer);
    while (boundary !== undefined) {
      const data = eventData(buffer.slice(0, boundary.index));
      buffer = buffer.slice(boundary.index + boundary.length);
      if (data !== undefined) yield data;
      boundary = findEventEnd(buffer);
    }
  }
  const data = eventData(buffer + decoder.decode());
  if (data !== undefined) yield data;
}

function findEventEnd(buffer: string): { index: number; length: number } | undefined {
  const match = /\r?\n\r?\n/.exec(buffer);
  return match === null ? undefined : { index: match.index, length: match[0].length };
}

function eventData(block: string): string | undefined {
  const lines: string[] = [];
  for (const line of block.split(/\r?\n/)) {
    if (line.startsWith("data:")) lines.push(line.slice(line.startsWith("data: ") ? 6 : 5));
  }
  return lines.length === 0 ? undefined : lines.join("\n");
}
