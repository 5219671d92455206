/**
 * A worker stand-in for `npm run bench:gateway`: it speaks the worker's HTTP contract but replies to every
 * chat completion at once with a canned body. A request to it costs only HTTP and JSON work.
 */
import { once } from "node:events";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";

import { benchQuant, serveBenchmark, tellBenchmark } from "./gateway-protocol.ts";

const content = "The spillway opened at dawn and the river rose to meet it.";
const contentPieces = ["The spillway", " opened at dawn", " and the river", " rose to meet it."];
const usage = { prompt_tokens: 24, completion_tokens: 14, total_tokens: 38 };
const replyHeaders = { "x-spillway-quant": benchQuant, "x-spillway-prompt-tokens": String(usage.prompt_tokens) };

interface ChatBody {
  model?: unknown;
  stream?: unknown;
  stream_options?: { include_usage?: unknown } | null;
}

let sequence = 0;

function completion(model: string, created: number) {
  return {
    id: `chatcmpl-bench${++sequence}`,
    object: "chat.completion",
    created,
    model,
    choices: [{ index: 0, message: { role: "assistant", content, refusal: null }, finish_reason: "stop", logprobs: null }],
    usage,
  };
}

/** Builds the events `worker/chunks.ts` writes for a short reply: role, content pieces, finish, then usage if asked. */
function streamEvents(model: string, created: number, includeUsage: boolean): string[] {
  const base = { id: `chatcmpl-bench${++sequence}`, object: "chat.completion.chunk", created, model };
  const usageField = includeUsage ? { usage: null } : {};
  const delta = (value: Record<string, unknown>, finishReason: string | null) => ({
    ...base,
    choices: [{ index: 0, delta: value, finish_reason: finishReason, logprobs: null }],
    ...usageField,
  });
  const chunks: unknown[] = [
    delta({ role: "assistant", content: "" }, null),
    ...contentPieces.map((piece) => delta({ content: piece }, null)),
    delta({}, "stop"),
  ];
  if (includeUsage) chunks.push({ ...base, choices: [], usage });
  return [...chunks.map((chunk) => `data: ${JSON.stringify(chunk)}\n\n`), "data: [DONE]\n\n"];
}

function answerChat(body: ChatBody, response: ServerResponse): void {
  const model = typeof body.model === "string" ? body.model : "bench";
  const created = Math.floor(Date.now() / 1000);
  if (body.stream === true) {
    response.writeHead(200, { "content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache", ...replyHeaders });
    for (const event of streamEvents(model, created, body.stream_options?.include_usage === true)) response.write(event);
    response.end();
    return;
  }
  const text = JSON.stringify(completion(model, created));
  response.writeHead(200, { "content-type": "application/json; charset=utf-8", "content-length": Buffer.byteLength(text), ...replyHeaders });
  response.end(text);
}

function sendJson(response: ServerResponse, status: number, value: unknown): void {
  response.writeHead(status, { "content-type": "application/json; charset=utf-8" });
  response.end(JSON.stringify(value));
}

function handle(request: IncomingMessage, response: ServerResponse): void {
  if (request.method === "GET" && request.url === "/readyz") {
    sendJson(response, 200, { ready: true, state: "ready", quant: benchQuant });
    return;
  }
  if (request.method !== "POST" || request.url !== "/v1/chat/completions") {
    sendJson(response, 404, { error: { message: `Unknown request URL: ${request.method} ${request.url}.`, type: "invalid_request_error", param: null, code: "unknown_url" } });
    return;
  }
  const parts: Buffer[] = [];
  request.on("data", (part: Buffer) => parts.push(part));
  request.on("end", () => {
    let body: ChatBody;
    try {
      body = JSON.parse(Buffer.concat(parts).toString("utf8")) as ChatBody;
    } catch {
      sendJson(response, 400, { error: { message: "The request body is not valid JSON.", type: "invalid_request_error", param: null, code: "invalid_json" } });
      return;
    }
    answerChat(body, response);
  });
}

async function main(): Promise<void> {
  const server = createServer({ keepAliveTimeout: 60_000 }, handle);
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  serveBenchmark({
    stop: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
  tellBenchmark({ type: "ready", url: `http://127.0.0.1:${port}` });
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
