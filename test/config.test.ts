import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { describe, test } from "node:test";

import { ConfigError, configForModel, loadConfig } from "../controller/config/load.ts";
import { configSchema } from "../controller/config/schema.ts";
import { makeTinyModel } from "./support/models.ts";

const directory = mkdtempSync(path.join(tmpdir(), "spillway-config-"));
process.on("exit", () => rmSync(directory, { recursive: true, force: true }));
let fileCount = 0;

function writeConfig(text: string): string {
  fileCount += 1;
  const file = path.join(directory, `spillway-${fileCount}.yaml`);
  writeFileSync(file, text);
  return file;
}

function loadError(file: string, env: NodeJS.ProcessEnv = {}): ConfigError {
  try {
    loadConfig(file, env);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    return error;
  }
  assert.fail("the configuration loaded");
}

const npcPool = `
  - name: npc
    aliases: [chat]
    variants:
      - quant: Q4_K_M
        model: /models/npc-Q4_K_M.gguf
      - quant: Q2_K
        model: /models/npc-Q2_K.gguf`;

describe("loadConfig", () => {
  test("valid file gets defaults", () => {
    const file = writeConfig(`pools:\n  - name: npc\n    variants:\n      - { quant: Q4_K_M, model: models/npc.gguf }\n`);
    const config = loadConfig(file, {});

    assert.deepEqual(config.gateway, { host: "127.0.0.1", port: 8080, maxBodyBytes: 4 * 1024 * 1024 });
    assert.deepEqual(config.auth, { keys: [], adminKeyEnv: "SPILLWAY_ADMIN_KEY" });
    assert.deepEqual(config.routing, { auto: [] });
    assert.deepEqual(config.overflow, { enabled: true });
    const pool = config.pools[0];
    assert.ok(pool !== undefined);
    assert.deepEqual(pool.replicas, { min: 1, max: 1 });
    assert.equal(pool.slotsPerReplica, 4);
    assert.equal(pool.queueSize, 16);
    assert.equal(pool.contextSize, 4096);
    assert.equal(pool.threadsPerReplica, undefined);
    assert.deepEqual(pool.slo, { timeToFirstTokenSeconds: 1.5 });
    assert.equal(pool.variants[0]?.model, path.join(directory, "models/npc.gguf"), "relative to the file's folder");
  });

  test("hf model URIs stay as written", () => {
    const file = writeConfig(`pools:\n  - name: npc\n    variants:\n      - { quant: Q4_K_M, model: "hf:someone/npc-GGUF:Q4_K_M" }\n`);
    assert.equal(loadConfig(file, {}).pools[0]?.variants[0]?.model, "hf:someone/npc-GGUF:Q4_K_M");
  });

  const badConfigs: Array<{ name: string; yaml: string; path: string; message: string; line?: number }> = [
    { name: "unknown key suggested", yaml: `pool:${npcPool}\n`, path: "pool", message: 'unknown key; did you mean "pools"?', line: 1 },
    {
      name: "nested unknown key",
      yaml: `pools:${npcPool}\n    slotsPerReplicas: 2\n`,
      path: "pools[0].slotsPerReplicas",
      message: 'unknown key; did you mean "slotsPerReplica"?',
      line: 9,
    },
    { name: "unknown key listed", yaml: `colour: red\npools:${npcPool}\n`, path: "colour", message: "unknown key; expected one of gateway, auth, pools, routing, overflow" },
    { name: "slots not integer", yaml: `pools:${npcPool}\n    slotsPerReplica: four\n`, path: "pools[0].slotsPerReplica", message: 'expected an integer from 1 to 256, got "four"' },
    { name: "min above max", yaml: `pools:${npcPool}\n    replicas: { min: 2, max: 1 }\n`, path: "pools[0].replicas.min", message: "must be at most replicas.max (1), got 2" },
    {
      name: "floor not in ladder",
      yaml: `pools:${npcPool}\n    qualityFloors: { json_schema: Q8_0 }\n`,
      path: "pools[0].qualityFloors.json_schema",
      message: "is Q8_0, which is not one of this pool's variants (Q4_K_M, Q2_K)",
    },
    {
      name: "duplicate alias",
      yaml: `pools:${npcPool}\n  - name: other\n    aliases: [chat]\n    variants: [{ quant: Q8_0, model: /m.gguf }]\n`,
      path: "pools[1]",
      message: "uses the name 'chat', already taken by pool 'npc'",
    },
    { name: "port out of range", yaml: `gateway: { port: 70000 }\npools:${npcPool}\n`, path: "gateway.port", message: "expected an integer from 0 to 65535, got 70000" },
    {
      name: "tenant with two keys",
      yaml: `auth:\n  keys:\n    - { name: game, keyEnv: GAME_KEY, keyFile: /run/key }\npools:${npcPool}\n`,
      path: "auth.keys[0]",
      message: "needs exactly one of keyEnv or keyFile",
    },
    {
      name: "route to unknown pool",
      yaml: `pools:${npcPool}\nrouting:\n  auto:\n    - { when: { tools: true }, pool: nope }\n`,
      path: "routing.auto[0].pool",
      message: "names 'nope', which is not a pool",
    },
    { name: "pools missing", yaml: "gateway: { port: 8080 }\n", path: "pools", message: "missing, expected a non-empty list" },
    { name: "pool name not label", yaml: `pools:\n  - name: NPC\n    variants: [{ quant: Q8_0, model: /m.gguf }]\n`, path: "pools[0].name", message: 'must be a DNS label: lowercase letters, digits and dashes, got "NPC"' },
    {
      name: "enum value",
      yaml: `auth:\n  keys:\n    - { name: game, keyEnv: GAME_KEY, onBudgetExhausted: block }\npools:${npcPool}\n`,
      path: "auth.keys[0].onBudgetExhausted",
      message: 'expected one of local_only, reject, got "block"',
    },
    { name: "positive number", yaml: `pools:${npcPool}\n    slo: { timeToFirstTokenSeconds: 0 }\n`, path: "pools[0].slo.timeToFirstTokenSeconds", message: "expected a number > 0, got 0" },
    { name: "root not mapping", yaml: "- npc\n- chat\n", path: "(root)", message: "expected a mapping, got a list with 2 items" },
  ];

  for (const bad of badConfigs) {
    test(`rejects ${bad.name}`, () => {
      const error = loadError(writeConfig(bad.yaml));
      const issue = error.issues.find((candidate) => candidate.path === bad.path);
      assert.ok(issue !== undefined, `no issue at ${bad.path}; got ${error.message}`);
      assert.ok(issue.message.includes(bad.message), `'${issue.message}' lacks '${bad.message}'`);
      assert.ok(error.message.includes(`${bad.path}: ${bad.message}`), "the error message lists the issue");
      if (bad.line !== undefined) assert.equal(issue.line, bad.line);
    });
  }
  test("cluster config takes no pools", () => {
    const file = writeConfig(`gateway: { host: 0.0.0.0 }\npools:${npcPool}\n`);
    assert.throws(() => loadConfig(file, {}, {}, { requirePools: false }), /pools: must be empty here: in a cluster each pool is a ModelPool resource/);
    const cluster = loadConfig(writeConfig("routing: { defaultPool: npc }\n"), {}, {}, { requirePools: false });
    assert.equal(cluster.routing.defaultPool, "npc", "routes may name ModelPools that do not exist yet");
  });


  test("lists every issue", () => {
    const error = loadError(writeConfig(`pool: 1\ngateway: { port: -1 }\npools:${npcPool}\n    contextSize: 10\n`));
    assert.deepEqual(error.issues.map((issue) => issue.path).sort(), ["gateway.port", "pool", "pools[0].contextSize"]);
    assert.equal(error.name, "ConfigError");
    assert.match(error.message, /pools\[0\]\.contextSize: expected an integer ≥ 64, got 10 \(line 11\)/);
    assert.match(error.message, /:\n {2}pool: .*\n {2}gateway\.port: .*\n {2}pools\[0\]\.contextSize: /, "issues in file order");
  });

  test("YAML syntax error has line", () => {
    const error = loadError(writeConfig(`pools:\n  - name: npc\n    variants: [ { quant: Q4, model: /m.gguf }\n`));
    assert.equal(error.issues.length, 1);
    assert.equal(error.issues[0]?.line, 4);
    assert.match(error.message, /invalid YAML at line 4, column 1/);
  });

  test("duplicate YAML key has line", () => {
    const error = loadError(writeConfig(`pools:${npcPool}\npools: []\n`));
    assert.match(error.message, /invalid YAML at line 9, column 1: Map keys must be unique/);
  });

  test("missing file", () => {
    const file = path.join(directory, "absent.yaml");
    const error = loadError(file);
    assert.equal(error.source, file);
    assert.match(error.message, /absent\.yaml/);
    assert.match(error.message, /file not found/);
  });

  test("unreadable file", () => {
    assert.match(loadError(directory).message, /cannot read the file: EISDIR/);
  });

  test("environment overrides file", () => {
    const file = writeConfig(`gateway: { host: 127.0.0.1, port: 9000 }\npools:${npcPool}\n`);
    assert.equal(loadConfig(file, {}).gateway.port, 9000);

    const fromEnvironment = loadConfig(file, { SPILLWAY_GATEWAY_PORT: "9100", SPILLWAY_GATEWAY_HOST: "0.0.0.0" });
    assert.equal(fromEnvironment.gateway.port, 9100);
    assert.equal(fromEnvironment.gateway.host, "0.0.0.0");
    assert.equal(loadConfig(file, { SPILLWAY_GATEWAY_PORT: "" }).gateway.port, 9000, "an empty variable counts as unset");
  });

  test("option overrides environment", () => {
    const file = writeConfig(`gateway: { port: 9000 }\npools:${npcPool}\n`);
    const config = loadConfig(file, { SPILLWAY_GATEWAY_PORT: "9100" }, { gateway: { port: 9200 } });
    assert.equal(config.gateway.port, 9200);
  });

  test("bad environment value names variable", () => {
    const error = loadError(writeConfig(`pools:${npcPool}\n`), { SPILLWAY_GATEWAY_PORT: "http" });
    assert.equal(error.issues[0]?.path, "gateway.port (from SPILLWAY_GATEWAY_PORT)");
    assert.equal(error.issues[0]?.message, 'expected an integer from 0 to 65535, got "http"');
  });
});

describe("configForModel", () => {
  test("tiny model file", async () => {
    const model = await makeTinyModel("NPC_Model.v2.gguf");
    const config = await configForModel(model, { env: {} });

    assert.doesNotThrow(() => configSchema.parse(config));
    assert.equal(config.pools.length, 1);
    const pool = config.pools[0];
    assert.ok(pool !== undefined);
    assert.equal(pool.name, "npc-model-v2");
    assert.deepEqual(pool.aliases, ["NPC_Model.v2"]);
    assert.deepEqual(pool.variants, [{ quant: "Q8_0", model }]);
    assert.deepEqual(pool.replicas, { min: 1, max: 1 });
  });

  test("name option", async () => {
    const model = await makeTinyModel("named.gguf");
    const config = await configForModel(model, { name: "npc", env: {} });
    assert.equal(config.pools[0]?.name, "npc");
  });

  test("hf URI quant suffix", async () => {
    const config = await configForModel("hf:someone/Npc-3B-GGUF:q4_k_m", { env: {} });
    assert.equal(config.pools[0]?.name, "npc-3b");
    assert.deepEqual(config.pools[0]?.variants, [{ quant: "Q4_K_M", model: "hf:someone/Npc-3B-GGUF:q4_k_m" }]);
  });

  test("hf URI without quant", async () => {
    const config = await configForModel("hf:someone/npc/npc.gguf", { env: {} });
    assert.equal(config.pools[0]?.variants[0]?.quant, "default");
  });

  test("environment applies", async () => {
    const config = await configForModel("hf:someone/npc:Q8_0", { env: { SPILLWAY_GATEWAY_PORT: "9300" } });
    assert.equal(config.gateway.port, 9300);
  });

  test("missing model file", async () => {
    await assert.rejects(configForModel(path.join(directory, "absent.gguf")), (error: unknown) => {
      assert.ok(error instanceof ConfigError);
      assert.match(error.message, /model file not found: .*absent\.gguf/);
      return true;
    });
  });
});
