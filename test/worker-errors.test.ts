import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { APIError } from "openai";

import { postRaw, startTestWorker, type TestWorker } from "./support/worker.ts";

let worker: TestWorker;

before(async () => {
  // contextSize 256 makes the context-length cases cheap to reach.
  worker = await startTestWorker({ contextSize: 256, maxBodyBytes: 16 * 1024 });
});

after(async () => {
  await worker.worker.stop();
});

const user = [{ role: "user", content: "hi" }];
const valid = { model: "tiny", messages: user };
const tool = { type: "function", function: { name: "give_item", parameters: { type: "object", properties: {} } } };

interface BadRequestCase {
  name: string;
  body: string;
  status: number;
  type: string;
  param: string | null;
  code?: string;
  headers?: Record<string, string>;
}

function json(value: unknown): string {
  return JSON.stringify(value);
}

const cases: BadRequestCase[] = [
  { name: "malformed JSON", body: '{"model": "tiny", "messages": [', status: 400, type: "invalid_request_error", param: null, code: "invalid_json" },
  { name: "body is an array", body: json([valid]), status: 400, type: "invalid_request_error", param: null },
  { name: "body is a string", body: json("hello"), status: 400, type: "invalid_request_error", param: null },
  { name: "missing model", body: json({ messages: user }), status: 400, type: "invalid_request_error", param: "model" },
  { name: "model is a number", body: json({ model: 7, messages: user }), status: 400, type: "invalid_request_error", param: "model" },
  { name: "missing messages", body: json({ model: "tiny" }), status: 400, type: "invalid_request_error", param: "messages" },
  { name: "empty messages", body: json({ model: "tiny", messages: [] }), status: 400, type: "invalid_request_error", param: "messages" },
  { name: "unknown role", body: json({ model: "tiny", messages: [{ role: "narrator", content: "x" }] }), status: 400, type: "invalid_request_error", param: "messages[0].role" },
  { name: "content is a number", body: json({ model: "tiny", messages: [{ role: "user", content: 5 }] }), status: 400, type: "invalid_request_error", param: "messages[0].content" },
  {
    name: "image content part",
    body: json({ model: "tiny", messages: [{ role: "user", content: [{ type: "text", text: "look" }, { type: "image_url", image_url: { url: "data:image/png;base64,AA==" } }] }] }),
    status: 400,
    type: "invalid_request_error",
    param: "messages[0].content[1]",
  },
  { name: "tool message without id", body: json({ model: "tiny", messages: [...user, { role: "tool", content: "x" }] }), status: 400, type: "invalid_request_error", param: "messages[1].tool_call_id" },
  { name: "unknown model", body: json({ ...valid, model: "gpt-5" }), status: 404, type: "not_found_error", param: "model", code: "model_not_found" },
  { name: "temperature above 2", body: json({ ...valid, temperature: 3 }), status: 400, type: "invalid_request_error", param: "temperature" },
  { name: "top_p above 1", body: json({ ...valid, top_p: 1.5 }), status: 400, type: "invalid_request_error", param: "top_p" },
  { name: "max_tokens zero", body: json({ ...valid, max_tokens: 0 }), status: 400, type: "invalid_request_error", param: "max_tokens" },
  { name: "max_tokens fractional", body: json({ ...valid, max_tokens: 2.5 }), status: 400, type: "invalid_request_error", param: "max_tokens" },
  { name: "five stop sequences", body: json({ ...valid, stop: ["a", "b", "c", "d", "e"] }), status: 400, type: "invalid_request_error", param: "stop" },
  { name: "stop of numbers", body: json({ ...valid, stop: [1] }), status: 400, type: "invalid_request_error", param: "stop[0]" },
  { name: "n above 1", body: json({ ...valid, n: 2 }), status: 400, type: "invalid_request_error", param: "n" },
  { name: "logprobs requested", body: json({ ...valid, logprobs: true }), status: 400, type: "invalid_request_error", param: "logprobs" },
  { name: "stream is a string", body: json({ ...valid, stream: "yes" }), status: 400, type: "invalid_request_error", param: "stream" },
  { name: "stream_options without stream", body: json({ ...valid, stream_options: { include_usage: true } }), status: 400, type: "invalid_request_error", param: "stream_options" },
  { name: "unknown top-level field", body: json({ ...valid, top_k: 40 }), status: 400, type: "invalid_request_error", param: "top_k" },
  { name: "unknown response_format type", body: json({ ...valid, response_format: { type: "yaml" } }), status: 400, type: "invalid_request_error", param: "response_format.type" },
  { name: "json_schema without schema", body: json({ ...valid, response_format: { type: "json_schema", json_schema: { name: "x" } } }), status: 400, type: "invalid_request_error", param: "response_format.json_schema.schema" },
  { name: "tool_choice without tools", body: json({ ...valid, tool_choice: "required" }), status: 400, type: "invalid_request_error", param: "tool_choice" },
  {
    name: "tool_choice names a missing tool",
    body: json({ ...valid, tools: [tool], tool_choice: { type: "function", function: { name: "open_door" } } }),
    status: 400,
    type: "invalid_request_error",
    param: "tool_choice.function.name",
  },
  { name: "tool name with spaces", body: json({ ...valid, tools: [{ type: "function", function: { name: "give item" } }] }), status: 400, type: "invalid_request_error", param: "tools[0].function.name" },
  {
    name: "tool parameters keyword",
    body: json({ ...valid, tools: [{ type: "function", function: { name: "roll", parameters: { type: "object", properties: { sides: { type: "integer", minimum: 2 } } } } }] }),
    status: 400,
    type: "invalid_request_error",
    param: "tools[0].function.parameters.properties.sides.minimum",
  },
  {
    name: "tool arguments not JSON",
    body: json({
      model: "tiny",
      messages: [...user, { role: "assistant", tool_calls: [{ id: "c1", type: "function", function: { name: "give_item", arguments: "{oops" } }] }, { role: "tool", tool_call_id: "c1", content: "ok" }],
    }),
    status: 400,
    type: "invalid_request_error",
    param: "messages[1].tool_calls[0].function.arguments",
  },
  {
    name: "tool result for unknown call",
    body: json({ model: "tiny", messages: [...user, { role: "tool", tool_call_id: "call_x", content: "ok" }] }),
    status: 400,
    type: "invalid_request_error",
    param: "messages[1].tool_call_id",
  },
  {
    name: "prompt longer than the context",
    body: json({ model: "tiny", messages: [{ role: "user", content: "dragon ".repeat(400) }] }),
    status: 400,
    type: "invalid_request_error",
    param: "messages",
    code: "context_length_exceeded",
  },
  {
    name: "prompt plus max_tokens over the context",
    body: json({ ...valid, max_tokens: 250 }),
    status: 400,
    type: "invalid_request_error",
    param: "max_tokens",
    code: "context_length_exceeded",
  },
  {
    name: "prompt plus max_completion_tokens over the context",
    body: json({ ...valid, max_completion_tokens: 250 }),
    status: 400,
    type: "invalid_request_error",
    param: "max_completion_tokens",
    code: "context_length_exceeded",
  },
  {
    name: "body over the size limit",
    body: json({ model: "tiny", messages: [{ role: "user", content: "x".repeat(20 * 1024) }] }),
    status: 413,
    type: "invalid_request_error",
    param: null,
    code: "request_too_large",
  },
];

describe("bad requests", () => {
  for (const badRequest of cases) {
    test(badRequest.name, async () => {
      const response = await postRaw(worker.url, badRequest.body, badRequest.headers);
      assert.equal(response.status, badRequest.status);
      const body = (await response.json()) as { error: { message: string; type: string; param: string | null; code: string | null } };
      assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
      assert.equal(body.error.type, badRequest.type);
      assert.equal(body.error.param, badRequest.param);
      if (badRequest.code !== undefined) assert.equal(body.error.code, badRequest.code);
      assert.ok(body.error.message.length > 20, "the message explains the failure");
    });
  }

  test("worker still serves after bad requests", async () => {
    const completion = await worker.client.chat.completions.create({ model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 2 });
    assert.equal(completion.choices.length, 1);
  });

  test("SDK surfaces the error fields", async () => {
    await assert.rejects(
      worker.client.chat.completions.create({ model: "gpt-5", messages: [{ role: "user", content: "hi" }] }),
      (error: unknown) => {
        assert.ok(error instanceof APIError);
        assert.equal(error.status, 404);
        assert.equal(error.code, "model_not_found");
        assert.equal(error.param, "model");
        return true;
      },
    );
  });

  test("unknown URL is an OpenAI 404", async () => {
    const response = await fetch(`${worker.url}/v1/completions`, { method: "POST", body: "{}" });
    assert.equal(response.status, 404);
    const body = (await response.json()) as { error: { type: string } };
    assert.equal(body.error.type, "not_found_error");
  });
});
