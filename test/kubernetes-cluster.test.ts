/**
 * `spillway controller` end to end against the fake API server: the gateway routes the official SDK to a
 * real worker that a fake pod points at, and the runtime scales and steps pools through the API. No
 * kubelet runs here, so the tests create the worker pods and set their readiness themselves.
 */
import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig } from "@kubernetes/client-node";
import OpenAI from "openai";
import { pino } from "pino";

import { configSchema } from "../controller/config/schema.ts";
import { startClusterController, type RunningClusterController } from "../controller/kubernetes/cluster.ts";
import type { ModelPoolStatus } from "../controller/kubernetes/modelpool-schema.ts";
import { workerLabels } from "../controller/kubernetes/worker-objects.ts";
import { eventually } from "./support/eventually.ts";
import { FakeKubeApiServer } from "./support/fake-kube/index.ts";
import { makeTinyModel } from "./support/models.ts";
import { startTestWorker, type TestWorker } from "./support/worker.ts";

const modelPools = { group: "spillway.dev", version: "v1alpha1", plural: "modelpools" };
const adminKeyVariable = "SPILLWAY_TEST_CLUSTER_ADMIN_KEY";
const adminKey = "cluster-test-admin-key";
process.env[adminKeyVariable] = adminKey;
const logger = pino({ level: process.env.SPILLWAY_TEST_LOG_LEVEL ?? "silent" });

let fake: FakeKubeApiServer;
let kubeConfig: KubeConfig;
let apps: AppsV1Api;
let core: CoreV1Api;
let customObjects: CustomObjectsApi;
let worker: TestWorker;
let ladder: Array<{ quant: string; model: string }>;
let namespaceCount = 0;
const running: RunningClusterController[] = [];

before(async () => {
  fake = await FakeKubeApiServer.start();
  kubeConfig = fake.kubeConfig();
  apps = kubeConfig.makeApiClient(AppsV1Api);
  core = kubeConfig.makeApiClient(CoreV1Api);
  customObjects = kubeConfig.makeApiClient(CustomObjectsApi);
  // Models that never end a reply by themselves, so max_tokens sets how long a request keeps a slot busy.
  ladder = [
    { quant: "F16", model: await makeTinyModel("cluster-f16.gguf", { quant: "f16", eosWeight: -100 }) },
    { quant: "Q8_0", model: await makeTinyModel("cluster-q8_0.gguf", { quant: "q8_0", eosWeight: -100 }) },
  ];
  worker = await startTestWorker({ variants: ladder, name: "npc", adminKeyEnv: adminKeyVariable, slots: 2, maxQueue: 8 });
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((controller) => controller.stop()));
});

after(async () => {
  await worker.worker.stop();
  await fake.stop();
});

function freshNamespace(): string {
  namespaceCount += 1;
  return `cluster-${namespaceCount}`;
}

async function createPool(namespace: string, spec: Record<string, unknown> = {}): Promise<void> {
  const body = {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "ModelPool",
    metadata: { name: "npc" },
    spec: { variants: ladder, replicas: { min: 1, max: 3 }, slotsPerReplica: 2, contextSize: 1024, image: "spillway/worker:0.1.0", ...spec },
  };
  await customObjects.createNamespacedCustomObject({ ...modelPools, namespace, body });
}

async function startCluster(namespace: string, identity = "controller-a", controlIntervalSeconds = 0, withAdminKey = true): Promise<RunningClusterController> {
  const controller = await startClusterController({
    config: configSchema.parse({ gateway: { host: "127.0.0.1", port: 0 } }),
    kubeConfig,
    namespace,
    identity,
    logger,
    ...(withAdminKey ? { workerAdminSecret: "spillway-admin", workerAdminKey: adminKey } : {}),
    controlIntervalSeconds,
    leaseDurationSeconds: 1,
    renewDeadlineSeconds: 0.6,
    retryPeriodSeconds: 0.1,
    watchRetryDelayMs: 20,
    drainSeconds: 1,
  });
  running.push(controller);
  return controller;
}

/** Plays the kubelet: a worker pod of pool npc whose IP and `http` port reach the test's real worker. */
function addPod(namespace: string, name: string, ready = true): void {
  fake.store.create("pods", {
    apiVersion: "v1",
    kind: "Pod",
    metadata: { name, namespace, labels: workerLabels("npc") },
    spec: { containers: [{ name: "worker", image: "spillway/worker:0.1.0", ports: [{ name: "http", containerPort: Number(new URL(worker.url).port) }] }] },
  });
  setPodReady(namespace, name, ready);
}

function setPodReady(namespace: string, name: string, ready: boolean): void {
  const pod = fake.store.get("pods", namespace, name)!;
  pod.status = { phase: "Running", podIP: "127.0.0.1", conditions: [{ type: "Ready", status: ready ? "True" : "False" }] };
  fake.store.update("pods", pod, "status");
}

async function poolStatus(namespace: string): Promise<ModelPoolStatus | undefined> {
  const pool = (await customObjects.getNamespacedCustomObject({ ...modelPools, namespace, name: "npc" })) as { status?: ModelPoolStatus };
  return pool.status;
}

async function deploymentReplicas(namespace: string): Promise<number | undefined> {
  return (await apps.readNamespacedDeployment({ name: "npc-worker", namespace })).spec?.replicas;
}

async function eventReasons(namespace: string): Promise<string[]> {
  return (await core.listNamespacedEvent({ namespace })).items.map((event) => event.reason ?? "");
}

function readyReplica(controller: RunningClusterController, pod: string) {
  const replica = controller.table.get(pod);
  return replica?.state === "ready" ? replica : undefined;
}

function sdk(controller: RunningClusterController): OpenAI {
  return new OpenAI({ baseURL: `${controller.url}/v1`, apiKey: "unused", maxRetries: 0, timeout: 60_000 });
}

async function workerQuant(): Promise<string | undefined> {
  const readiness = (await (await fetch(`${worker.url}/readyz`)).json()) as { quant?: string; swapping?: boolean };
  return readiness.swapping === true ? undefined : readiness.quant;
}

describe("cluster controller", () => {
  test("routes the SDK to a ready pod", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace);
    addPod(namespace, "npc-worker-a");
    const replica = await eventually(() => readyReplica(controller, "npc-worker-a"), "the pod as a ready replica");
    assert.equal(replica.url, worker.url, "the replica URL comes from the pod IP and its http port");
    assert.equal(replica.quant, "F16", "the quant comes from the worker");

    const models = await sdk(controller).models.list();
    assert.ok(models.data.some((model) => model.id === "npc"), "the ModelPool is served as a model");
    const completion = await sdk(controller).chat.completions.create({ model: "npc", messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
    assert.equal(completion.usage?.completion_tokens, 4, "the worker decoded the reply");
  });

  test("deleted pool leaves gateway and metrics", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace);
    const metrics = async () => (await fetch(`${controller.url}/metrics`)).text();
    await eventually(async () => ((await metrics()).includes('pool="npc"') ? true : undefined), "series for the pool");

    await customObjects.deleteNamespacedCustomObject({ ...modelPools, namespace, name: "npc" });
    await eventually(async () => ((await metrics()).includes('pool="npc"') ? undefined : true), "the pool's series to go");
    const models = await sdk(controller).models.list();
    assert.ok(!models.data.some((model) => model.id === "npc"), "the deleted pool is no longer a model");
  });

  test("drops a pod that loses readiness", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace);
    addPod(namespace, "npc-worker-a");
    await eventually(() => readyReplica(controller, "npc-worker-a"), "the ready replica");

    const lostAt = Date.now();
    setPodReady(namespace, "npc-worker-a", false);
    await eventually(() => (readyReplica(controller, "npc-worker-a") === undefined ? true : undefined), "the replica leaving routing", 1000);
    assert.ok(Date.now() - lostAt < 1000, "removed within a second");

    await core.deleteNamespacedPod({ name: "npc-worker-a", namespace });
    await eventually(() => (controller.table.get("npc-worker-a") === undefined ? true : undefined), "the deleted pod leaving the table", 1000);
  });

  test("scales the Deployment", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace);
    await eventually(async () => ((await deploymentReplicas(namespace)) === 1 ? true : undefined), "the Deployment");

    controller.runtime.setReplicaCount("npc", 3);
    await eventually(async () => ((await deploymentReplicas(namespace)) === 3 ? true : undefined), "three replicas");
    const status = await eventually(async () => (await poolStatus(namespace))?.lastScale, "status.lastScale");
    assert.equal(status.fromReplicas, 1, "lastScale.fromReplicas");
    assert.equal(status.toReplicas, 3, "lastScale.toReplicas");
    assert.ok((await eventReasons(namespace)).includes("Scaled"), "a Scaled event");

    controller.runtime.setReplicaCount("npc", 10);
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(await deploymentReplicas(namespace), 3, "a count above replicas.max is clamped");
    await eventually(async () => ((await poolStatus(namespace))?.desiredReplicas === 3 ? true : undefined), "the reconciler to keep the scaled count");
  });

  test("scale-down spares busy pods", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace);
    addPod(namespace, "npc-worker-a");
    addPod(namespace, "npc-worker-b");
    await eventually(() => readyReplica(controller, "npc-worker-a"), "replica a");
    await eventually(() => readyReplica(controller, "npc-worker-b"), "replica b");
    await eventually(async () => ((await deploymentReplicas(namespace)) === 1 ? true : undefined), "the Deployment");
    controller.runtime.setReplicaCount("npc", 2);
    await eventually(async () => ((await deploymentReplicas(namespace)) === 2 ? true : undefined), "two replicas");

    const finish = controller.table.begin("npc-worker-a");
    try {
      controller.runtime.setReplicaCount("npc", 1);
      await eventually(async () => ((await deploymentReplicas(namespace)) === 1 ? true : undefined), "one replica");
    } finally {
      finish();
    }
    const cost = async (pod: string) => (await core.readNamespacedPod({ name: pod, namespace })).metadata?.annotations?.["controller.kubernetes.io/pod-deletion-cost"];
    assert.equal(await cost("npc-worker-a"), "1", "the pod with a request in flight costs more to delete");
    assert.equal(await cost("npc-worker-b"), "0", "the idle pod goes first");
  });

  test("scales from zero on a request", async () => {
    const namespace = freshNamespace();
    await createPool(namespace, { replicas: { min: 0, max: 2 } });
    const controller = await startCluster(namespace);
    await eventually(async () => ((await deploymentReplicas(namespace)) === 0 ? true : undefined), "a Deployment with no replicas");

    const abort = new AbortController();
    const request = fetch(`${controller.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "npc", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 }),
      signal: abort.signal,
    }).catch(() => undefined);
    await eventually(async () => ((await deploymentReplicas(namespace)) === 1 ? true : undefined), "one replica");
    abort.abort();
    await request;
  });

  test("steps a pod along the ladder", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace);
    addPod(namespace, "npc-worker-a");
    await eventually(() => readyReplica(controller, "npc-worker-a"), "the ready replica");

    try {
      await controller.runtime.setVariant("npc-worker-a", 1);
      assert.equal(await workerQuant(), "Q8_0", "the worker serves the lower rung");
      assert.equal(controller.table.get("npc-worker-a")?.quant, "Q8_0", "the gateway routes by the new quant");
      // The annotation is written in the background once the replica serves the new variant.
      const annotation = await eventually(async () => {
        const pod = await core.readNamespacedPod({ name: "npc-worker-a", namespace });
        return pod.metadata?.annotations?.["spillway.dev/variant"] === "Q8_0" ? true : undefined;
      }, "the pod annotation");
      assert.ok(annotation, "the pod annotation records the variant");
      const configMap = await core.readNamespacedConfigMap({ name: "npc-worker", namespace });
      assert.equal(configMap.data?.["start-variant"], "Q8_0", "new pods start on the pool's current rung");
      const status = await eventually(async () => {
        const current = await poolStatus(namespace);
        return current?.lowestRung === "Q8_0" && current.lastLadderStep !== undefined ? current : undefined;
      }, "the status after the step");
      assert.equal(status.lastLadderStep?.replica, "npc-worker-a", "lastLadderStep.replica");
      assert.equal(status.lastLadderStep?.fromVariant, "F16", "lastLadderStep.fromVariant");
      assert.deepEqual(status.replicaStatuses, [{ name: "npc-worker-a", variant: "Q8_0", ready: true }], "replicaStatuses");
      assert.ok((await eventReasons(namespace)).includes("LadderStep"), "a LadderStep event");
    } finally {
      await controller.runtime.setVariant("npc-worker-a", 0);
    }
    assert.equal(await workerQuant(), "F16", "the step back up");
  });

  test("failed step is a warning event", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const controller = await startCluster(namespace, "controller-a", 0, false);
    addPod(namespace, "npc-worker-a");
    await eventually(() => readyReplica(controller, "npc-worker-a"), "the ready replica");

    await assert.rejects(controller.runtime.setVariant("npc-worker-a", 1), /no admin key is set for the workers/);
    const events = (await core.listNamespacedEvent({ namespace })).items.filter((event) => event.reason === "LadderStepFailed");
    assert.equal(events.length, 1, "one LadderStepFailed event");
    assert.equal(events[0]?.type, "Warning", "the event is a warning");
    assert.match(events[0]?.message ?? "", /--worker-admin-secret/, "the event says what to do");
    assert.equal(await workerQuant(), "F16", "the worker still serves its variant");
  });

  test("new leader reads variants from the cluster", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    const first = await startCluster(namespace, "controller-a");
    addPod(namespace, "npc-worker-a");
    await eventually(() => readyReplica(first, "npc-worker-a"), "the ready replica");
    try {
      await first.runtime.setVariant("npc-worker-a", 1);
      await first.stop();
      running.splice(running.indexOf(first), 1);

      const second = await startCluster(namespace, "controller-b");
      const replica = await eventually(() => readyReplica(second, "npc-worker-a"), "the replica seen by the new leader");
      assert.equal(replica.quant, "Q8_0", "the new instance reads the quant the pod serves");
      await eventually(() => (second.reconciler.isLeader ? true : undefined), "leadership");
      const configMap = await core.readNamespacedConfigMap({ name: "npc-worker", namespace });
      assert.equal(configMap.data?.["start-variant"], "Q8_0", "the new leader keeps the pool's rung for new pods");
    } finally {
      await running[0]?.runtime.setVariant("npc-worker-a", 0).catch(() => undefined);
      if ((await workerQuant()) !== "F16") await running[0]?.runtime.setVariant("npc-worker-a", 0);
    }
  });

  test("control loop scales under load", async () => {
    const namespace = freshNamespace();
    const autoscaling = { scaleUpAfterSeconds: 0.5, smoothingSeconds: 0.25, scaleDownAfterSeconds: 600, stepDownAfterSeconds: 600, stepUpAfterSeconds: 600 };
    await createPool(namespace, { replicas: { min: 1, max: 2 }, autoscaling, slo: { timeToFirstTokenSeconds: 60 } });
    const controller = await startCluster(namespace, "controller-a", 0.2);
    addPod(namespace, "npc-worker-a");
    await eventually(() => readyReplica(controller, "npc-worker-a"), "the ready replica");

    const abort = new AbortController();
    const client = sdk(controller);
    const requests = Array.from({ length: 5 }, () =>
      client.chat.completions
        .create({ model: "npc", messages: [{ role: "user", content: "Tell a long story" }], max_tokens: 400, stream: true }, { signal: abort.signal })
        .then(async (stream) => {
          for await (const _chunk of stream);
        })
        .catch(() => undefined),
    );
    try {
      await eventually(async () => ((await deploymentReplicas(namespace)) === 2 ? true : undefined), "the control loop to add a replica", 15_000);
      // The status is written after the scale, so it may trail the Deployment by a moment.
      const lastScale = await eventually(async () => (await poolStatus(namespace))?.lastScale, "status.lastScale from the control loop");
      assert.equal(lastScale.toReplicas, 2, "status.lastScale.toReplicas");
    } finally {
      abort.abort();
      await Promise.all(requests);
    }
  });
});
