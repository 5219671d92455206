import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

import { Ajv, type ValidateFunction } from "ajv";
import { parse } from "yaml";

import { modelPoolSchema, modelPoolSpecSchema, toPoolConfig } from "../controller/kubernetes/modelpool-schema.ts";
import { crdPath, modelPoolCrd, renderModelPoolCrd } from "../scripts/generate-crd.ts";

type SchemaNode = Record<string, unknown>;

const samplePath = path.resolve(import.meta.dirname, "..", "charts", "spillway", "samples", "modelpool-npc.yaml");

function committedCrd(): SchemaNode {
  return parse(readFileSync(crdPath, "utf8")) as SchemaNode;
}

function servedVersion(crd: SchemaNode): SchemaNode {
  return ((crd.spec as SchemaNode).versions as SchemaNode[])[0]!;
}

function openApiSchema(crd: SchemaNode): SchemaNode {
  return (servedVersion(crd).schema as SchemaNode).openAPIV3Schema as SchemaNode;
}

function sample(): SchemaNode {
  return parse(readFileSync(samplePath, "utf8")) as SchemaNode;
}

interface SchemaEntry {
  /** Dotted field path; array items and map values share the path of their field. */
  fieldPath: string;
  node: SchemaNode;
  /** False for array items and map values, which are not fields of their own. */
  isField: boolean;
}

function* schemaNodes(node: SchemaNode, fieldPath = "", isField = true): Generator<SchemaEntry> {
  yield { fieldPath, node, isField };
  for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, SchemaNode>)) {
    yield* schemaNodes(child, fieldPath === "" ? name : `${fieldPath}.${name}`);
  }
  for (const key of ["items", "additionalProperties"] as const) {
    if (typeof node[key] === "object") {
      yield* schemaNodes(node[key] as SchemaNode, fieldPath, false);
    }
  }
}

/**
 * Rewrites a CRD schema into draft-07 JSON Schema for ajv, the way the API server reads it: unknown
 * fields are errors (kubectl's strict field validation), int-or-string is an integer or a string, and
 * exclusiveMinimum is OpenAPI 3.0's boolean flag.
 */
function toDraft7(node: SchemaNode): SchemaNode {
  const result: SchemaNode = {};
  for (const [key, value] of Object.entries(node)) {
    if (key.startsWith("x-kubernetes-") || key === "format") continue;
    if (key === "properties") {
      result.properties = Object.fromEntries(Object.entries(value as Record<string, SchemaNode>).map(([name, child]) => [name, toDraft7(child)]));
    } else if (key === "items" || key === "additionalProperties") {
      result[key] = toDraft7(value as SchemaNode);
    } else if (key === "exclusiveMinimum") {
      result.exclusiveMinimum = node.minimum;
      delete result.minimum;
    } else if (key !== "minimum" || node.exclusiveMinimum !== true) {
      result[key] = value;
    }
  }
  if (node["x-kubernetes-int-or-string"] === true) {
    result.anyOf = [{ type: "integer" }, { type: "string" }];
  }
  if (result.properties !== undefined && node["x-kubernetes-preserve-unknown-fields"] !== true) {
    result.additionalProperties = false;
  }
  return result;
}

function crdValidator(options: { useDefaults: boolean } = { useDefaults: false }): ValidateFunction {
  return new Ajv({ useDefaults: options.useDefaults }).compile(toDraft7(openApiSchema(committedCrd())));
}

describe("ModelPool CRD", () => {
  test("committed file is current", () => {
    const committed = readFileSync(crdPath, "utf8");
    assert.equal(committed, renderModelPoolCrd(), `${path.relative(process.cwd(), crdPath)} is stale: run npm run generate:crd`);
  });

  test("schema is structural", () => {
    for (const { fieldPath, node } of schemaNodes(openApiSchema(committedCrd()))) {
      const typed = node.type !== undefined || node["x-kubernetes-int-or-string"] === true || node["x-kubernetes-preserve-unknown-fields"] === true;
      assert.ok(typed, `${fieldPath || "<root>"} has no type`);
      for (const keyword of ["$ref", "oneOf", "anyOf", "allOf", "not"]) {
        assert.equal(node[keyword], undefined, `${fieldPath || "<root>"} uses ${keyword}`);
      }
      assert.notEqual(node.additionalProperties, false, `${fieldPath} sets additionalProperties: false`);
      assert.ok(node.properties === undefined || node.additionalProperties === undefined, `${fieldPath} sets both properties and additionalProperties`);
    }
  });

  test("every field described", () => {
    const fields = [...schemaNodes(openApiSchema(committedCrd()))].filter((entry) => entry.isField && /^(spec|status)\b/.test(entry.fieldPath));
    assert.ok(fields.length > 50, `found only ${fields.length} fields`);
    for (const { fieldPath, node } of fields) {
      assert.equal(typeof node.description, "string", `${fieldPath} has no description`);
    }
  });

  test("names and subresources", () => {
    const crd = modelPoolCrd();
    const spec = crd.spec as SchemaNode;
    assert.equal((crd.metadata as SchemaNode).name, "modelpools.spillway.dev");
    assert.equal(spec.scope, "Namespaced");
    assert.deepEqual((spec.names as SchemaNode).shortNames, ["mp"]);
    assert.deepEqual(servedVersion(crd).subresources, { status: {} });
  });

  test("printer columns", () => {
    const columns = servedVersion(modelPoolCrd()).additionalPrinterColumns as SchemaNode[];
    assert.deepEqual(
      columns.map((column) => column.name),
      ["Ready", "Desired", "Rung", "Age"],
    );
    assert.deepEqual(
      columns.map((column) => column.jsonPath),
      [".status.readyReplicas", ".status.desiredReplicas", ".status.lowestRung", ".metadata.creationTimestamp"],
    );
  });

  test("replicas rule", () => {
    const spec = (openApiSchema(modelPoolCrd()).properties as Record<string, SchemaNode>).spec!;
    const replicas = (spec.properties as Record<string, SchemaNode>).replicas!;
    const rules = replicas["x-kubernetes-validations"] as Array<{ rule: string; message: string }>;
    assert.deepEqual(rules[0], { rule: "self.min <= self.max", message: "replicas.min must be less than or equal to replicas.max" });
  });

  test("defaults match zod", () => {
    const spec = { variants: [{ quant: "Q4_K_M", model: "tiny.gguf" }], image: "worker:test" };
    const resource = { apiVersion: "spillway.dev/v1alpha1", kind: "ModelPool", metadata: { name: "tiny" }, spec: structuredClone(spec) };
    const validate = crdValidator({ useDefaults: true });

    assert.ok(validate(resource), JSON.stringify(validate.errors));
    assert.deepEqual(resource.spec, modelPoolSpecSchema.parse(spec));
  });
});

describe("ModelPool samples", () => {
  test("npc sample is valid", () => {
    const validate = crdValidator();
    const pool = sample();

    assert.ok(validate(pool), JSON.stringify(validate.errors));
    assert.ok(modelPoolSchema.safeParse(pool).success);
  });

  test("npc sample as pool config", () => {
    const pool = modelPoolSchema.parse(sample());
    const config = toPoolConfig(pool.metadata.name, pool.spec);

    assert.equal(config.name, "npc");
    assert.deepEqual(config.replicas, { min: 1, max: 4 });
    assert.equal(config.queueSize, 16);
    assert.equal("image" in config, false);
  });

  test("unknown field rejected", () => {
    const pool = sample();
    (pool.spec as SchemaNode).replica = { min: 1 };

    assert.equal(crdValidator()(pool), false);
    assert.equal(modelPoolSchema.safeParse(pool).success, false);
  });

  test("min above max rejected", () => {
    const pool = sample();
    (pool.spec as SchemaNode).replicas = { min: 3, max: 2 };

    const result = modelPoolSchema.safeParse(pool);
    assert.equal(result.success, false);
    assert.deepEqual(result.error?.issues[0]?.path, ["spec", "replicas", "min"]);
  });

  test("unknown floor quant rejected", () => {
    const pool = sample();
    (pool.spec as SchemaNode).qualityFloors = { tools: "Q8_0" };

    const result = modelPoolSchema.safeParse(pool);
    assert.equal(result.success, false);
    assert.deepEqual(result.error?.issues[0]?.path, ["spec", "qualityFloors", "tools"]);
  });

  test("name must be a DNS label", () => {
    const pool = sample();
    (pool.metadata as SchemaNode).name = "npc.v2";

    assert.equal(modelPoolSchema.safeParse(pool).success, false);
  });

  test("fractional quantity rejected", () => {
    const pool = sample();
    (pool.spec as SchemaNode).resources = { limits: { cpu: 0.5 } };

    assert.equal(crdValidator()(pool), false);
    assert.equal(modelPoolSchema.safeParse(pool).success, false);
  });
});
