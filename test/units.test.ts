import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { defaultModelName } from "../cli/commands/worker.ts";
import { parseChatRequest } from "../api/chat-request.ts";
import { ApiError } from "../api/errors.ts";
import { requestIdFrom } from "../api/request-id.ts";
import { quantName } from "../worker/engine.ts";
import { toChatHistory } from "../worker/history.ts";
import { toGrammarSchema } from "../worker/json-schema.ts";
import { withoutIntegerExponent } from "../worker/structured-output.ts";
import { parseCpuMax } from "../worker/threads.ts";

describe("threads", () => {
  test("cgroup quota becomes a CPU count", () => {
    assert.equal(parseCpuMax("200000 100000\n"), 2);
    assert.equal(parseCpuMax("150000 100000"), 1.5);
    assert.equal(parseCpuMax("max 100000"), undefined);
    assert.equal(parseCpuMax("garbage"), undefined);
  });
});

describe("request parsing", () => {
  test("applies OpenAI defaults", () => {
    const request = parseChatRequest({ model: "m", messages: [{ role: "user", content: "hi" }] });
    assert.equal(request.stream, false);
    assert.equal(request.temperature, 1);
    assert.equal(request.maxTokens, undefined);
    assert.deepEqual(request.stop, []);
    assert.equal(request.toolChoice, "none");
  });

  test("max_completion_tokens wins over max_tokens", () => {
    const request = parseChatRequest({ model: "m", messages: [{ role: "user", content: "hi" }], max_completion_tokens: 9 });
    assert.equal(request.maxTokens, 9);
  });

  test("tools default tool_choice to auto", () => {
    const request = parseChatRequest({
      model: "m",
      messages: [{ role: "user", content: "hi" }],
      tools: [{ type: "function", function: { name: "f" } }],
    });
    assert.equal(request.toolChoice, "auto");
  });

  test("a single stop string becomes a list", () => {
    const request = parseChatRequest({ model: "m", messages: [{ role: "user", content: "hi" }], stop: "END" });
    assert.deepEqual(request.stop, ["END"]);
  });
});

describe("chat history", () => {
  test("tool results join their calls", () => {
    const history = toChatHistory([
      { role: "system", content: "You are an innkeeper." },
      { role: "user", content: "Room?" },
      { role: "assistant", content: null, tool_calls: [{ id: "c1", type: "function", function: { name: "book", arguments: '{"nights":2}' } }] },
      { role: "tool", tool_call_id: "c1", content: "booked" },
    ]);
    assert.equal(history.length, 3);
    assert.deepEqual(history[0], { type: "system", text: "You are an innkeeper." });
    const model = history[2];
    assert.equal(model?.type, "model");
    const call = model?.type === "model" ? model.response[0] : undefined;
    assert.ok(typeof call === "object" && call.type === "functionCall");
    assert.equal(call.name, "book");
    assert.deepEqual(call.params, { nights: 2 });
    assert.equal(call.result, "booked");
  });

  test("ends with an empty model turn", () => {
    const history = toChatHistory([{ role: "developer", content: [{ type: "text", text: "Be brief." }] }, { role: "user", content: "hi" }]);
    assert.deepEqual(history.at(-1), { type: "model", response: [] });
    assert.equal(history[0]?.type, "system");
  });
});

describe("grammar schema", () => {
  test("anyOf becomes oneOf", () => {
    const converted = toGrammarSchema({ type: "object", properties: { giver: { anyOf: [{ type: "string" }, { type: "null" }] } } }, "schema");
    assert.deepEqual(converted, { type: "object", properties: { giver: { oneOf: [{ type: "string" }, { type: "null" }] } } });
  });

  test("annotations are dropped, descriptions kept", () => {
    const converted = toGrammarSchema({ $schema: "https://json-schema.org/draft/2020-12/schema", title: "Quest", description: "A quest", type: "object" }, "schema");
    assert.deepEqual(converted, { description: "A quest", type: "object" });
  });

  test("rejects keywords decoding cannot enforce", () => {
    for (const [schema, param] of [
      [{ type: "string", pattern: "x" }, "schema.pattern"],
      [{ type: "number", maximum: 3 }, "schema.maximum"],
      [{ allOf: [{ type: "string" }] }, "schema.allOf"],
      [{ type: "string", format: "email" }, "schema.format"],
      [{ type: ["object", "null"] }, "schema.type"],
    ] as const) {
      assert.throws(() => toGrammarSchema(schema, "schema"), (error: unknown) => error instanceof ApiError && error.param === param);
    }
  });

  test("integer rule loses its exponent", () => {
    const grammar = 'root ::= integer-number-rule\ninteger-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15}) ([eE] [-+]? ("0" | [1-9] [0-9]{0,15}))?\nfractional-number-rule ::= "x" ([eE] [-+]?)?';
    const patched = withoutIntegerExponent(grammar);
    assert.ok(patched.includes('integer-number-rule ::= "-"? ("0" | [1-9] [0-9]{0,15})\n'));
    assert.ok(patched.includes('fractional-number-rule ::= "x" ([eE] [-+]?)?'));
  });
});

describe("names and ids", () => {
  test("model name comes from the file", () => {
    assert.equal(defaultModelName("/models/npc-Q4_K_M.gguf"), "npc-Q4_K_M");
    assert.equal(defaultModelName("hf:user/repo:Q4_K_M"), "repo-Q4_K_M");
  });

  test("quant names follow GGUF file types", () => {
    assert.equal(quantName(15), "Q4_K_M");
    assert.equal(quantName(1), "F16");
    assert.equal(quantName(undefined), null);
  });

  test("request ids are kept only when sane", () => {
    assert.equal(requestIdFrom("abc-123"), "abc-123");
    assert.match(requestIdFrom("a b"), /^req_/);
    assert.match(requestIdFrom("x".repeat(200)), /^req_/);
    assert.match(requestIdFrom(undefined), /^req_/);
  });
});
