import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { isMap, isScalar, parse, parseDocument, type Node } from "yaml";

import { modelPoolSchema } from "../controller/kubernetes/modelpool-schema.ts";
import { crdPath } from "../scripts/generate-crd.ts";
import { chartValuesSchema, renderValuesSchema, valuesSchemaPath } from "../scripts/generate-values-schema.ts";
import { currentChartDashboards, expectedChartDashboards, manifestsPath, manifestsRelease, renderManifests } from "../scripts/render-manifests.ts";
import { allFeaturesValues, chartPath, findObject, renderNotes, renderObjects } from "./support/chart.ts";
import { hasModel, modelPoolValidator, parseObjects, unknownFields, validateWithModel, type KubeObject } from "./support/kube-validation.ts";

const repositoryRoot = path.resolve(import.meta.dirname, "..");
const packageVersion = (JSON.parse(readFileSync(path.join(repositoryRoot, "package.json"), "utf8")) as { version: string }).version;
const valuesFile = path.join(chartPath, "values.yaml");
const samplesFolder = path.join(chartPath, "samples");
const sampleFiles = readdirSync(samplesFolder).filter((name) => name.endsWith(".yaml")).sort();

/**
 * Lists the values in a values.yaml text whose own comment, and every comment above them in the tree,
 * leave out the word "Default". A list counts as one value. The first key of a nested mapping keeps its
 * comment on the mapping, which is where the yaml package puts it.
 */
function valuesWithoutDefault(text: string): string[] {
  const missing: string[] = [];
  const walk = (node: unknown, keyPath: string, documented: boolean): void => {
    if (!isMap(node)) {
      if (!documented) missing.push(keyPath);
      return;
    }
    node.items.forEach((pair, index) => {
      const key = isScalar(pair.key) ? String(pair.key.value) : "?";
      const comment = [(pair.key as Node).commentBefore, index === 0 ? node.commentBefore : undefined].join("\n");
      const childPath = keyPath === "" ? key : `${keyPath}.${key}`;
      const value = pair.value as Node | null;
      const isEmptyMap = isMap(value) && value.items.length === 0;
      walk(isEmptyMap ? null : value, childPath, documented || comment.includes("Default"));
    });
  };
  walk(parseDocument(text).contents, "", false);
  return missing;
}

describe("generated chart files", () => {
  test("values schema is current", () => {
    assert.equal(readFileSync(valuesSchemaPath, "utf8"), renderValuesSchema(), "charts/spillway/values.schema.json is stale: run npm run generate:values-schema");
  });

  test("chart dashboards are current", () => {
    const expected = expectedChartDashboards();
    const current = currentChartDashboards();
    assert.deepEqual([...current.keys()], [...expected.keys()], "dashboard files in charts/spillway/dashboards: run npm run render:manifests");
    for (const [name, content] of expected) {
      assert.ok(current.get(name) === content, `charts/spillway/dashboards/${name} differs from dashboards/${name}: run npm run render:manifests`);
    }
  });

  test("manifests are current", () => {
    const committed = readdirSync(manifestsPath).filter((name) => name.endsWith(".yaml")).sort();
    const rendered = renderManifests();
    assert.deepEqual(committed, [...rendered.keys()], "files in manifests/: run npm run render:manifests");
    for (const [name, content] of rendered) {
      assert.ok(readFileSync(path.join(manifestsPath, name), "utf8") === content, `manifests/${name} is stale: run npm run render:manifests`);
    }
  });

  test("manifests are valid objects", () => {
    const objects = readdirSync(manifestsPath)
      .filter((name) => name.endsWith(".yaml"))
      .sort()
      .flatMap((name) => parseObjects(readFileSync(path.join(manifestsPath, name), "utf8")));
    const kinds = objects.map((object) => object.kind);
    assert.equal(kinds[0], "Namespace", "the namespace comes first");
    assert.equal(kinds[1], "CustomResourceDefinition", "the CRD comes second");
    assert.equal(kinds.includes("Pod"), false, "the helm test pod is left out");
    for (const object of objects) {
      assert.ok(hasModel(object), `${object.kind} has no model to validate it`);
      assert.doesNotThrow(() => validateWithModel(object), `${object.kind}/${object.metadata.name} is invalid`);
      assert.deepEqual(unknownFields(object), [], `${object.kind}/${object.metadata.name} has unknown fields`);
      if (!["Namespace", "CustomResourceDefinition"].includes(object.kind)) {
        assert.equal(object.metadata.namespace, manifestsRelease.namespace, `${object.kind}/${object.metadata.name} namespace`);
      }
    }
  });
});

describe("chart values", () => {
  test("chart version matches the package", () => {
    const chart = parse(readFileSync(path.join(chartPath, "Chart.yaml"), "utf8")) as { apiVersion: string; appVersion: string };
    assert.equal(chart.apiVersion, "v2", "Chart.yaml apiVersion");
    assert.equal(chart.appVersion, packageVersion, "appVersion is the package.json version, the image tag");
  });

  test("values files pass the values schema", () => {
    for (const file of [valuesFile, allFeaturesValues]) {
      const result = chartValuesSchema.safeParse(parse(readFileSync(file, "utf8")));
      assert.ok(result.success, `${path.relative(repositoryRoot, file)}: ${result.error?.message}`);
    }
  });

  test("every value documents its default", () => {
    assert.deepEqual(valuesWithoutDefault(readFileSync(valuesFile, "utf8")), [], "values without a comment that gives the default");
  });

  test("documentation check finds a bare value", () => {
    const text = "image:\n  # Image name. Default spillway.\n  repository: spillway\n  tag: latest\nreplicaCount: 1\n";
    assert.deepEqual(valuesWithoutDefault(text), ["image.tag", "replicaCount"], "undocumented values");
  });
});

describe("sample ModelPools", () => {
  const validate = modelPoolValidator(crdPath);

  for (const name of sampleFiles) {
    test(`${name} is valid against the CRD`, () => {
      const pool = parse(readFileSync(path.join(samplesFolder, name), "utf8")) as KubeObject;
      assert.ok(validate(pool), `${name}: ${JSON.stringify(validate.errors)}`);
      assert.ok(modelPoolSchema.safeParse(pool).success, `${name} fails the ModelPool zod schema`);
      const spec = pool.spec as { image: string; resources?: { limits?: Record<string, unknown> } };
      const usesGpu = spec.resources?.limits?.["nvidia.com/gpu"] !== undefined;
      const image = usesGpu ? "spillway/worker-cuda" : "spillway/worker";
      assert.equal(spec.image, `${image}:${packageVersion}`, `${name} worker image`);
    });
  }

  test("CRD validator finds an unknown field", () => {
    const pool = parse(readFileSync(path.join(samplesFolder, sampleFiles[0]!), "utf8")) as KubeObject;
    (pool.spec as Record<string, unknown>).replica = 2;
    assert.equal(validate(pool), false, "a misspelled field");
  });

  test("chart renders each sample unchanged", () => {
    const files = sampleFiles.flatMap((name) => ["--set", `samples.files[${sampleFiles.indexOf(name)}]=${name}`]);
    const objects = renderObjects(["--set", "samples.enabled=true", ...files]);
    for (const name of sampleFiles) {
      const sample = parse(readFileSync(path.join(samplesFolder, name), "utf8")) as KubeObject;
      assert.deepEqual(findObject(objects, "ModelPool", sample.metadata.name), sample, `${name} as rendered`);
    }
  });

  test("worker image replaces only the image", () => {
    const objects = renderObjects(["-f", allFeaturesValues]);
    for (const name of sampleFiles) {
      const sample = parse(readFileSync(path.join(samplesFolder, name), "utf8")) as KubeObject & { spec: Record<string, unknown> };
      const expected = { ...sample, spec: { ...sample.spec, image: "registry.example.com/spillway/worker:0.1.0" } };
      assert.deepEqual(findObject(objects, "ModelPool", sample.metadata.name), expected, `${name} as rendered with samples.workerImage`);
    }
  });
});

describe("helm test pod", () => {
  const tenantKey = "key-studio-a";
  let gatewayUrl = "";
  const server = createServer((request, response) => {
    const authorized = request.url === "/v1/models" && request.headers.authorization === `Bearer ${tenantKey}`;
    response.writeHead(authorized ? 200 : 401, { "content-type": "application/json" });
    response.end(JSON.stringify(authorized ? { object: "list", data: [] } : { error: { message: "invalid key", type: "invalid_request_error", param: null, code: "invalid_api_key" } }));
  });

  before(async () => {
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    gatewayUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  after(() => new Promise<void>((resolve) => server.close(() => resolve())));

  /** Runs the test pod's container command with node, against the local stand-in gateway. */
  async function runTestPod(key: string): Promise<number> {
    const pod = findObject(renderObjects(["-f", allFeaturesValues]), "Pod", "spillway-test-models");
    const [container] = (pod.spec as { containers: Array<{ command: string[]; args: string[]; env: Array<{ name: string; valueFrom?: { secretKeyRef: { key: string } } }> }> }).containers;
    assert.equal(container!.env.find((variable) => variable.name === "TENANT_KEY")?.valueFrom?.secretKeyRef.key, "studio-a", "tests.keyEnv's Secret key");

    const [command, ...commandArgs] = container!.command;
    const child = spawn(command!, [...commandArgs, ...container!.args], { env: { ...process.env, GATEWAY_URL: gatewayUrl, TENANT_KEY: key }, stdio: "ignore" });
    return new Promise((resolve, reject) => {
      child.once("error", reject);
      child.once("exit", (code) => resolve(code ?? 1));
    });
  }

  test("passes with a valid key", async () => {
    assert.equal(await runTestPod(tenantKey), 0, "exit code with the tenant key");
  });

  test("fails with a wrong key", async () => {
    assert.notEqual(await runTestPod("wrong"), 0, "exit code with a wrong key");
  });
});

describe("chart NOTES", () => {
  test("shows the first request", () => {
    const notes = renderNotes();
    assert.match(notes, /kubectl -n games port-forward service\/spillway 8080:80/, "port-forward command");
    assert.match(notes, /get secret spillway-tenant-keys -o jsonpath='\{\.data\.default\}'/, "tenant key lookup");
    assert.match(notes, /curl -s http:\/\/127\.0\.0\.1:8080\/v1\/chat\/completions/, "first chat request");
    assert.match(notes, /baseURL: "http:\/\/127\.0\.0\.1:8080\/v1"/, "OpenAI SDK base URL");
    assert.match(notes, /spillway-admin \(key admin-key\)/, "admin Secret to create");
  });
});
