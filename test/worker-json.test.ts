import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { Ajv2020 } from "ajv/dist/2020.js";
import { getLlama } from "node-llama-cpp";

import { ApiError } from "../api/errors.ts";
import { StructuredOutputs } from "../worker/structured-output.ts";

import { postRaw, startTestWorker, type TestWorker } from "./support/worker.ts";

let worker: TestWorker;

before(async () => {
  worker = await startTestWorker();
});

after(async () => {
  await worker.worker.stop();
});

const questSchema = {
  type: "object",
  properties: {
    title: { type: "string", maxLength: 12 },
    difficulty: { type: "string", enum: ["easy", "hard"] },
    reward: {
      type: "object",
      properties: { gold: { type: "integer" }, items: { type: "array", items: { type: "string", maxLength: 6 }, maxItems: 2 } },
      required: ["gold", "items"],
      additionalProperties: false,
    },
    repeatable: { type: "boolean" },
    giver: { anyOf: [{ type: "string", maxLength: 8 }, { type: "null" }] },
  },
  required: ["title", "difficulty", "reward", "repeatable", "giver"],
  additionalProperties: false,
};

describe("response_format", () => {
  test("json_schema output validates against the schema", async () => {
    const validate = new Ajv2020().compile(questSchema);
    for (const seed of [1, 2, 3]) {
      const completion = await worker.client.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: "Make a quest." }],
        response_format: { type: "json_schema", json_schema: { name: "quest", schema: questSchema, strict: true } },
        max_tokens: 400,
        temperature: 0.8,
        seed,
      });
      assert.equal(completion.choices[0]?.finish_reason, "stop");
      const value = JSON.parse(completion.choices[0]?.message.content ?? "") as unknown;
      assert.ok(validate(value), JSON.stringify(validate.errors));
    }
  });

  test("json_schema integers never decode to exponents", async () => {
    const schema = { type: "object", properties: { gold: { type: "integer" }, xp: { type: "integer" } }, required: ["gold", "xp"] };
    for (const seed of [11, 12, 13, 14]) {
      const completion = await worker.client.chat.completions.create({
        model: "tiny",
        messages: [{ role: "user", content: "Reward?" }],
        response_format: { type: "json_schema", json_schema: { name: "reward", schema } },
        max_tokens: 120,
        temperature: 1,
        seed,
      });
      const content = completion.choices[0]?.message.content ?? "";
      assert.doesNotMatch(content, /[eE]/, content);
      const value = JSON.parse(content) as { gold: number; xp: number };
      assert.ok(Number.isInteger(value.gold));
      assert.ok(Number.isInteger(value.xp));
    }
  });

  test("json_object output is a JSON object", async () => {
    const completion = await worker.client.chat.completions.create({
      model: "tiny",
      messages: [{ role: "user", content: "Describe an NPC as JSON." }],
      response_format: { type: "json_object" },
      max_tokens: 300,
      temperature: 0,
    });
    if (completion.choices[0]?.finish_reason === "stop") {
      const value = JSON.parse(completion.choices[0].message.content ?? "") as unknown;
      assert.equal(typeof value, "object");
      assert.ok(value !== null && !Array.isArray(value));
    } else {
      assert.equal(completion.choices[0]?.finish_reason, "length");
      assert.match(completion.choices[0]?.message.content ?? "", /^\s*\{/);
    }
  });

  test("unsupported schema keyword is a 400", async () => {
    const response = await postRaw(
      worker.url,
      JSON.stringify({
        model: "tiny",
        messages: [{ role: "user", content: "x" }],
        response_format: {
          type: "json_schema",
          json_schema: { name: "npc", schema: { type: "object", properties: { name: { type: "string", pattern: "^[A-Z]" } } } },
        },
      }),
    );
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { param: string; message: string; type: string } };
    assert.equal(body.error.type, "invalid_request_error");
    assert.equal(body.error.param, "response_format.json_schema.schema.properties.name.pattern");
    assert.match(body.error.message, /pattern/);
  });

  test("invalid schema is a 400, never free text", async () => {
    const response = await postRaw(
      worker.url,
      JSON.stringify({
        model: "tiny",
        messages: [{ role: "user", content: "x" }],
        response_format: { type: "json_schema", json_schema: { name: "npc", schema: { type: "object", required: "name" } } },
      }),
    );
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { param: string } };
    assert.equal(body.error.param, "response_format.json_schema.schema");
  });

  test("schema with dangling $ref is a 400", async () => {
    const response = await postRaw(
      worker.url,
      JSON.stringify({
        model: "tiny",
        messages: [{ role: "user", content: "x" }],
        response_format: { type: "json_schema", json_schema: { name: "npc", schema: { $ref: "#/$defs/missing" } } },
      }),
    );
    assert.equal(response.status, 400);
    const body = (await response.json()) as { error: { param: string } };
    assert.equal(body.error.param, "response_format.json_schema.schema.$ref");
  });

  test("output failing the schema is an error", async () => {
    const llama = await getLlama({ gpu: false, maxThreads: 1 });
    try {
      const outputs = new StructuredOutputs(llama);
      const schema = { type: "object", properties: { name: { type: "string" } }, required: ["name"] };
      const constraint = await outputs.forResponseFormat({ type: "json_schema", name: "npc", schema });
      assert.ok(constraint !== undefined);
      assert.doesNotThrow(() => constraint.validate('{"name": "Mira"}'));
      for (const text of ['{"title": "Mira"}', '{"name": 3}', '{"name": "Mi', "[]"]) {
        assert.throws(
          () => constraint.validate(text),
          (error: unknown) => error instanceof ApiError && error.status === 500 && error.code === "invalid_model_output",
          text,
        );
      }
    } finally {
      await llama.dispose();
    }
  });
});
