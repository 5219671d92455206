import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { describe, test, type TestContext } from "node:test";

import { pino } from "pino";

import type { RawChatRequest } from "../api/chat-request.ts";
import { BackendError, type BackendReply, type ChatCompletionChunk } from "../controller/backends/types.ts";
import { WorkerBackend, type ReplicaTarget, type WorkerBackendOptions } from "../controller/backends/worker.ts";

type Handler = (body: Record<string, unknown>, response: ServerResponse) => void;

interface SeenRequest {
  body: Record<string, unknown>;
  headers: IncomingHttpHeaders;
  /** Which TCP connection carried the request, numbered from 1 in the order the server accepted them. */
  connection: number;
}

/** A worker stand-in on loopback that replies to each request with the next queued handler and records connections. */
interface FakeReplica {
  replica: ReplicaTarget;
  requests: SeenRequest[];
  /** Queues handlers for the next requests, in order. */
  enqueue(...handlers: Handler[]): void;
  connectionCount(): number;
  waitForClose(connection: number): Promise<void>;
}

const messages = [{ role: "user" as const, content: "Hello there." }];
const chunkBase = { id: "chatcmpl-1", object: "chat.completion.chunk", created: 1, model: "tiny" };

function chunk(content: string): ChatCompletionChunk {
  return { ...chunkBase, choices: [{ index: 0, delta: { content }, finish_reason: null, logprobs: null }] } as ChatCompletionChunk;
}

const completion = {
  id: "chatcmpl-2",
  object: "chat.completion",
  created: 1,
  model: "tiny",
  choices: [{ index: 0, message: { role: "assistant", content: "Hi.", refusal: null }, finish_reason: "stop", logprobs: null }],
  usage: { prompt_tokens: 5, completion_tokens: 2, total_tokens: 7 },
};

const workerHeaders = { "x-spillway-quant": "Q8_0", "x-spillway-prompt-tokens": "5" };

const answerCompletion: Handler = (_body, response) => {
  response.writeHead(200, { "content-type": "application/json", ...workerHeaders });
  response.end(JSON.stringify(completion));
};

function openStream(response: ServerResponse): void {
  response.writeHead(200, { "content-type": "text/event-stream", ...workerHeaders });
}

function sendEvent(response: ServerResponse, data: unknown): void {
  response.write(`data: ${typeof data === "string" ? data : JSON.stringify(data)}\n\n`);
}

const answerStream: Handler = (_body, response) => {
  openStream(response);
  sendEvent(response, chunk("Hi"));
  sendEvent(response, chunk("."));
  sendEvent(response, { ...chunkBase, choices: [], usage: completion.usage });
  sendEvent(response, "[DONE]");
  response.end();
};

/** Sends one event and then nothing, holding the response open. */
const hangAfterFirstEvent: Handler = (_body, response) => {
  openStream(response);
  sendEvent(response, chunk("Hi"));
};

const neverAnswer: Handler = () => {};

async function startReplica(t: TestContext): Promise<FakeReplica> {
  const handlers: Handler[] = [];
  const requests: SeenRequest[] = [];
  const connectionIds = new Map<Socket, number>();
  const closed = new Set<number>();
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    const parts: Buffer[] = [];
    request.on("data", (part: Buffer) => parts.push(part));
    request.on("end", () => {
      const body = JSON.parse(Buffer.concat(parts).toString("utf8")) as Record<string, unknown>;
      requests.push({ body, headers: request.headers, connection: connectionIds.get(request.socket) ?? 0 });
      const handler = handlers.shift();
      assert.ok(handler !== undefined, `the fake replica got request ${requests.length} without a handler for it`);
      handler(body, response);
    });
  });
  server.on("connection", (socket: Socket) => {
    const id = connectionIds.size + 1;
    connectionIds.set(socket, id);
    socket.on("close", () => closed.add(id));
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  const { port } = server.address() as AddressInfo;
  return {
    replica: { id: "tiny-0", pool: "tiny", url: `http://127.0.0.1:${port}` },
    requests,
    enqueue: (...next) => handlers.push(...next),
    connectionCount: () => connectionIds.size,
    waitForClose: async (connection) => {
      const deadline = Date.now() + 2000;
      while (!closed.has(connection) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10));
      assert.ok(closed.has(connection), `connection ${connection} is still open 2 s later`);
    },
  };
}

function backendFor(t: TestContext, options: Partial<WorkerBackendOptions> = {}): WorkerBackend {
  const backend = new WorkerBackend({ logger: pino({ level: "silent" }), ...options });
  t.after(() => backend.close());
  return backend;
}

function call(request: Partial<RawChatRequest> = {}, signal: AbortSignal = new AbortController().signal) {
  return { request: { model: "auto", messages, ...request }, requestId: "req-1", signal };
}

async function restOf(reply: BackendReply): Promise<ChatCompletionChunk[]> {
  assert.equal(reply.kind, "stream", "the reply is a stream");
  const chunks: ChatCompletionChunk[] = [];
  for await (const next of reply.rest) chunks.push(next);
  return chunks;
}

async function rejection(promise: Promise<unknown>): Promise<BackendError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof BackendError, `expected a BackendError but got ${String(error)}`);
    return error;
  }
  assert.fail("expected a rejection but the promise resolved");
}

describe("worker backend, replies", { timeout: 10_000 }, () => {
  test("completion carries pool model and request id", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue(answerCompletion);
    const reply = await backendFor(t).send(call(), fake.replica);

    assert.equal(reply.kind, "completion", "a request without stream gets a completion");
    assert.deepEqual(reply.completion, completion, "the completion is relayed unchanged");
    assert.equal(reply.quant, "Q8_0", "the quant comes from x-spillway-quant");
    assert.equal(fake.requests[0]?.body.model, "tiny", "the model is rewritten to the pool name");
    assert.equal(fake.requests[0]?.headers["x-request-id"], "req-1", "the request id is sent upstream");
    assert.equal(fake.requests[0]?.body.stream_options, undefined, "a completion gets no stream_options");
  });

  test("stream forces usage and reads prompt tokens", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue(answerStream);
    const reply = await backendFor(t).send(call({ stream: true }), fake.replica);
    const rest = await restOf(reply);

    assert.ok(reply.kind === "stream", "a stream request gets a stream");
    assert.equal(reply.first.choices[0]?.delta.content, "Hi", "the first chunk is read before send resolves");
    assert.equal(reply.promptTokens, 5, "prompt tokens come from x-spillway-prompt-tokens");
    assert.equal(reply.quant, "Q8_0", "the quant comes from x-spillway-quant");
    assert.equal(rest.length, 2, "the rest holds the second chunk and the usage chunk");
    assert.deepEqual(rest[1]?.usage, completion.usage, "the usage chunk is relayed");
    assert.deepEqual(fake.requests[0]?.body.stream_options, { include_usage: true }, "include_usage is forced on");
  });

  test("keep-alive connection serves sequential requests", async (t) => {
    const fake = await startReplica(t);
    const backend = backendFor(t);
    fake.enqueue(answerCompletion, answerStream, answerCompletion);
    await backend.send(call(), fake.replica);
    await restOf(await backend.send(call({ stream: true }), fake.replica));
    await backend.send(call(), fake.replica);

    assert.deepEqual(fake.requests.map((request) => request.connection), [1, 1, 1], "all three requests share one connection");
  });

  test("close shuts idle keep-alive sockets", async (t) => {
    const fake = await startReplica(t);
    const backend = backendFor(t);
    fake.enqueue(answerCompletion);
    await backend.send(call(), fake.replica);
    backend.close();

    await fake.waitForClose(1);
  });
});

describe("worker backend, failures", { timeout: 10_000 }, () => {
  test("aborted stream does not reuse its socket", async (t) => {
    const fake = await startReplica(t);
    const backend = backendFor(t);
    fake.enqueue(hangAfterFirstEvent, answerCompletion);
    const client = new AbortController();
    const reply = await backend.send(call({ stream: true }, client.signal), fake.replica);
    const rest = restOf(reply);
    client.abort(new Error("client disconnected"));

    await assert.rejects(rest, "the stream fails after the abort");
    await fake.waitForClose(1);
    const next = await backend.send(call(), fake.replica);
    assert.equal(next.kind, "completion", "the next request succeeds");
    assert.equal(fake.requests[1]?.connection, 2, "the next request opens a new connection");
  });

  test("abort before headers rejects retryable", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue(neverAnswer);
    const client = new AbortController();
    setTimeout(() => client.abort(new Error("client disconnected")), 50);
    const error = await rejection(backendFor(t).send(call({}, client.signal), fake.replica));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, true, "nothing reached the client, so the gateway may retry");
    assert.match(error.message, /client disconnected/, "the message names the abort reason");
    await fake.waitForClose(1);
  });

  test("consumer leaving early closes the socket", async (t) => {
    const fake = await startReplica(t);
    const backend = backendFor(t);
    fake.enqueue((_body, response) => {
      openStream(response);
      sendEvent(response, chunk("a"));
      sendEvent(response, chunk("b"));
    }, answerCompletion);
    const reply = await backend.send(call({ stream: true }), fake.replica);
    assert.ok(reply.kind === "stream", "a stream request gets a stream");
    for await (const _next of reply.rest) break;

    await fake.waitForClose(1);
    await backend.send(call(), fake.replica);
    assert.equal(fake.requests[1]?.connection, 2, "the next request opens a new connection");
  });

  test("headers past connect timeout are retryable", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue(neverAnswer);
    const error = await rejection(backendFor(t, { connectTimeoutSeconds: 0.2 }).send(call(), fake.replica));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, true, "a timeout before the first byte is retryable");
    assert.match(error.message, /no response headers within 0.2 s/, "the message names the timeout");
    await fake.waitForClose(1);
  });

  test("slow body is not cut by connect timeout", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue((_body, response) => {
      response.writeHead(200, { "content-type": "application/json" });
      response.flushHeaders();
      setTimeout(() => response.end(JSON.stringify(completion)), 400);
    });
    const reply = await backendFor(t, { connectTimeoutSeconds: 0.2 }).send(call(), fake.replica);

    assert.equal(reply.kind, "completion", "the body arrives after the connect timeout has passed");
  });

  test("silence past idle timeout fails the stream", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue(hangAfterFirstEvent);
    const reply = await backendFor(t, { idleTimeoutSeconds: 0.2 }).send(call({ stream: true }), fake.replica);
    const error = await rejection(restOf(reply));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, false, "a failure after the first byte is not retryable");
    assert.match(error.message, /sent nothing for 0.2 s/, "the message names the idle timeout");
    await fake.waitForClose(1);
  });

  test("error event mid-stream is a 502", async (t) => {
    const fake = await startReplica(t);
    const errorBody = { error: { message: "The model failed.", type: "server_error", param: null, code: "generation_failed" } };
    fake.enqueue((_body, response) => {
      openStream(response);
      sendEvent(response, chunk("Hi"));
      sendEvent(response, errorBody);
      response.end();
    });
    const reply = await backendFor(t).send(call({ stream: true }), fake.replica);
    const error = await rejection(restOf(reply));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, false, "retryable");
    assert.deepEqual(error.body, errorBody, "the replica's error body is kept");
  });

  test("stream ending before [DONE] fails", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue((_body, response) => {
      openStream(response);
      sendEvent(response, chunk("Hi"));
      response.end();
    });
    const reply = await backendFor(t).send(call({ stream: true }), fake.replica);
    const error = await rejection(restOf(reply));

    assert.equal(error.status, 502, "status");
    assert.match(error.message, /closed the stream before \[DONE\]/, "the message names the early end");
  });

  test("connection lost mid-stream fails the stream", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue((_body, response) => {
      openStream(response);
      sendEvent(response, chunk("Hi"));
      setTimeout(() => response.socket?.destroy(), 50);
    });
    const reply = await backendFor(t).send(call({ stream: true }), fake.replica);

    await assert.rejects(restOf(reply), "the stream fails when the replica's connection drops");
  });

  test("connection lost mid-body is retryable", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue((_body, response) => {
      response.writeHead(200, { "content-type": "application/json", "content-length": "1000" });
      response.write("{\"id\":");
      setTimeout(() => response.socket?.destroy(), 50);
    });
    const error = await rejection(backendFor(t).send(call(), fake.replica));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, true, "nothing reached the client, so the gateway may retry");
  });

  test("HTTP errors keep status and OpenAI body", async (t) => {
    const fake = await startReplica(t);
    const backend = backendFor(t);
    const cases = [
      { status: 503, retryable: true },
      { status: 429, retryable: true },
      { status: 400, retryable: false },
    ];
    for (const { status, retryable } of cases) {
      const errorBody = { error: { message: `Failed with ${status}.`, type: "server_error", param: null, code: "some_code" } };
      fake.enqueue((_body, response) => {
        response.writeHead(status, { "content-type": "application/json" });
        response.end(JSON.stringify(errorBody));
      });
      const error = await rejection(backend.send(call({ stream: true }), fake.replica));

      assert.equal(error.status, status, `HTTP ${status} keeps its status`);
      assert.equal(error.retryable, retryable, `HTTP ${status} retryable`);
      assert.deepEqual(error.body, errorBody, `HTTP ${status} keeps the replica's body`);
    }
    assert.deepEqual(fake.requests.map((request) => request.connection), [1, 1, 1], "a fully read error reply keeps the connection");
  });

  test("HTTP error without OpenAI body is local_error", async (t) => {
    const fake = await startReplica(t);
    fake.enqueue((_body, response) => {
      response.writeHead(500, { "content-type": "text/plain" });
      response.end("oops");
    });
    const error = await rejection(backendFor(t).send(call(), fake.replica));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, true, "a 5xx is retryable");
    assert.equal(error.body.error.code, "local_error", "code");
    assert.match(error.message, /returned HTTP 500/, "the message names the status");
  });

  test("refused connection is retryable", async (t) => {
    const fake = await startReplica(t);
    const replica = { ...fake.replica, url: "http://127.0.0.1:9" };
    const error = await rejection(backendFor(t).send(call(), replica));

    assert.equal(error.status, 502, "status");
    assert.equal(error.retryable, true, "retryable");
    assert.equal(error.body.error.code, "local_error", "code");
  });
});
