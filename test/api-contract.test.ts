import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { Ajv2020 } from "ajv/dist/2020.js";
import { parse } from "yaml";

import { postRaw, readEvents, startTestWorker, type TestWorker } from "./support/worker.ts";

const root = new URL("..", import.meta.url).pathname;
const contractPath = path.join(root, "api", "openapi.yaml");

/** Validates values against the contract's component schemas (OpenAPI 3.1 schemas are JSON Schema 2020-12). */
function contractValidator() {
  const document = parse(readFileSync(contractPath, "utf8")) as Record<string, unknown>;
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  ajv.addSchema({ ...document, $id: "spillway" });
  return (schemaName: string, value: unknown) => {
    const validate = ajv.getSchema(`spillway#/components/schemas/${schemaName}`);
    assert.ok(validate !== undefined, `no schema ${schemaName}`);
    assert.ok(validate(value), `${schemaName}: ${JSON.stringify(validate.errors)}\n${JSON.stringify(value)}`);
  };
}

describe("api contract", () => {
  test("generated types match openapi.yaml", () => {
    const directory = mkdtempSync(path.join(tmpdir(), "spillway-openapi-"));
    try {
      const output = path.join(directory, "generated.ts");
      const cliPath = path.join(root, "node_modules", "openapi-typescript", "bin", "cli.js");
      execFileSync(process.execPath, [cliPath, contractPath, "--output", output], { stdio: "pipe" });
      const committed = readFileSync(path.join(root, "api", "generated.ts"), "utf8");
      assert.equal(committed, readFileSync(output, "utf8"), "api/generated.ts is stale: run `npm run generate:api`");
    } finally {
      rmSync(directory, { recursive: true, force: true });
    }
  });
});

describe("worker responses match the contract", () => {
  let worker: TestWorker;
  const check = contractValidator();
  const tool = {
    type: "function",
    function: { name: "give_item", parameters: { type: "object", properties: { item: { type: "string", enum: ["sword"] } } } },
  };

  before(async () => {
    worker = await startTestWorker();
  });

  after(async () => {
    await worker.worker.stop();
  });

  test("completion, stream chunks and errors", async () => {
    const base = { model: "tiny", messages: [{ role: "user", content: "hi" }], max_tokens: 8 };
    const completion = await postRaw(worker.url, JSON.stringify(base));
    check("CreateChatCompletionResponse", await completion.json());

    const toolCompletion = await postRaw(worker.url, JSON.stringify({ ...base, max_tokens: 40, tools: [tool], tool_choice: "required" }));
    check("CreateChatCompletionResponse", await toolCompletion.json());

    const stream = await postRaw(worker.url, JSON.stringify({ ...base, stream: true, stream_options: { include_usage: true }, tools: [tool], tool_choice: "required", max_tokens: 40 }));
    for (const event of await readEvents(stream)) if (event !== "[DONE]") check("CreateChatCompletionStreamResponse", event);

    const failure = await postRaw(worker.url, JSON.stringify({ ...base, model: "missing" }));
    check("ErrorResponse", await failure.json());
  });

  test("model list and probes", async () => {
    check("ListModelsResponse", await (await fetch(`${worker.url}/v1/models`)).json());
    check("HealthResponse", await (await fetch(`${worker.url}/healthz`)).json());
    check("ReadinessResponse", await (await fetch(`${worker.url}/readyz`)).json());
  });
});
