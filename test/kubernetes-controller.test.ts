import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { AppsV1Api, CoreV1Api, CustomObjectsApi, type KubeConfig, type V1Deployment } from "@kubernetes/client-node";
import { pino } from "pino";

import { retryOnConflict } from "../controller/kubernetes/api-errors.ts";
import { ModelPoolController } from "../controller/kubernetes/controller.ts";
import { ListWatch } from "../controller/kubernetes/list-watch.ts";
import { modelPoolSpecSchema, toPoolConfig, type ModelPoolStatus } from "../controller/kubernetes/modelpool-schema.ts";
import { mergeConditions } from "../controller/kubernetes/pool-status.ts";
import { ownedFieldsMatch } from "../controller/kubernetes/reconciler.ts";
import { desiredDeployment, desiredReplicaCount, desiredService, workerObjectName } from "../controller/kubernetes/worker-objects.ts";
import { eventually } from "./support/eventually.ts";
import { FakeKubeApiServer } from "./support/fake-kube/index.ts";

const modelPools = { group: "spillway.dev", version: "v1alpha1", plural: "modelpools" };
const logger = pino({ level: "silent" });
const owner = { name: "npc", namespace: "games", uid: "0b6f2c1e-1111-4a4a-9c9c-123456789abc" };

function poolSpec(overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    variants: [
      { quant: "Q4_K_M", model: "hf:example/npc-GGUF:Q4_K_M" },
      { quant: "Q2_K", model: "/data/npc-Q2_K.gguf" },
    ],
    replicas: { min: 1, max: 3 },
    image: "registry.example.com/spillway/worker:0.1.0",
    resources: { requests: { cpu: "2" }, limits: { "nvidia.com/gpu": 1 } },
    nodeSelector: { "nvidia.com/gpu.present": "true" },
    tolerations: [{ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" }],
    modelCache: { emptyDir: { sizeLimit: "20Gi" } },
    priorityClassName: "spillway-workers",
    ...overrides,
  };
}

function deploymentFor(spec: Record<string, unknown>): V1Deployment {
  const parsed = modelPoolSpecSchema.parse(spec);
  return desiredDeployment(owner, parsed, toPoolConfig(owner.name, parsed), desiredReplicaCount(parsed, undefined), { adminKeySecret: "spillway-admin" });
}

describe("desired objects", () => {
  test("worker arguments", () => {
    const args = deploymentFor(poolSpec()).spec!.template.spec!.containers[0]!.args!;
    assert.ok(args.includes("Q4_K_M=/models/npc/Q4_K_M.gguf"));
    assert.ok(args.includes("Q2_K=/data/npc-Q2_K.gguf"));
    assert.equal(args[args.indexOf("--start-variant-env") + 1], "SPILLWAY_START_VARIANT");
    assert.ok(!args.includes("--start-variant"), "the start variant comes from the ConfigMap, not the template");
    assert.equal(args[args.indexOf("--gpu") + 1], "cuda");
    assert.equal(args[args.indexOf("--port") + 1], "8000");
  });

  test("pod settings", () => {
    const pod = deploymentFor(poolSpec()).spec!.template.spec!;
    const worker = pod.containers[0]!;
    assert.equal(worker.resources?.limits?.["nvidia.com/gpu"], "1");
    assert.equal(pod.nodeSelector?.["nvidia.com/gpu.present"], "true");
    assert.equal(pod.tolerations?.[0]?.key, "nvidia.com/gpu");
    assert.equal(pod.priorityClassName, "spillway-workers");
    assert.equal(pod.volumes?.[0]?.emptyDir?.sizeLimit, "20Gi");
    assert.equal(worker.readinessProbe?.httpGet?.path, "/readyz");
    assert.equal(worker.livenessProbe?.httpGet?.path, "/healthz");
    assert.ok((pod.terminationGracePeriodSeconds ?? 0) > (worker.lifecycle?.preStop?.sleep?.seconds ?? 0) + 30);
  });

  test("fetches only downloaded variants", () => {
    const fetcher = deploymentFor(poolSpec()).spec!.template.spec!.initContainers?.[0];
    const script = fetcher?.command?.join(" ") ?? "";
    assert.match(script, /pull --dir '\/models\/npc' --filename 'Q4_K_M.gguf' 'hf:example\/npc-GGUF:Q4_K_M'/);
    assert.doesNotMatch(script, /Q2_K/);
  });

  test("read-only claim skips the fetch", () => {
    const pod = deploymentFor(poolSpec({ modelCache: { persistentVolumeClaim: { claimName: "models", readOnly: true } } })).spec!.template.spec!;
    assert.equal(pod.initContainers, undefined);
    assert.equal(pod.volumes?.[0]?.persistentVolumeClaim?.claimName, "models");
  });

  test("headless service", () => {
    const service = desiredService(owner);
    assert.equal(service.spec?.clusterIP, "None");
    assert.equal(service.spec?.ports?.[0]?.name, "http");
    assert.equal(service.metadata?.ownerReferences?.[0]?.controller, true);
  });

  test("replica count stays in bounds", () => {
    const spec = modelPoolSpecSchema.parse(poolSpec({ replicas: { min: 0, max: 2 } }));
    assert.equal(desiredReplicaCount(spec, undefined), 0, "a new pool starts at replicas.min");
    assert.equal(desiredReplicaCount(spec, 1), 1, "a count the control loop set is kept");
    assert.equal(desiredReplicaCount(spec, 5), 2, "a count above replicas.max is lowered");
  });

  test("worker env from secret and ConfigMap", () => {
    const env = deploymentFor(poolSpec()).spec!.template.spec!.containers[0]!.env ?? [];
    const adminKey = env.find((variable) => variable.name === "SPILLWAY_ADMIN_KEY");
    const startVariant = env.find((variable) => variable.name === "SPILLWAY_START_VARIANT");
    assert.deepEqual(adminKey?.valueFrom?.secretKeyRef, { name: "spillway-admin", key: "admin-key" }, "admin key from the Secret");
    assert.equal(startVariant?.valueFrom?.configMapKeyRef?.name, "npc-worker", "start variant from the pool's ConfigMap");
    assert.equal(startVariant?.valueFrom?.configMapKeyRef?.optional, true, "a missing ConfigMap leaves the top rung");
  });

  test("long pool names fit object names", () => {
    const long = `${"a".repeat(60)}-b`;
    const other = `${"a".repeat(60)}-c`;
    assert.equal(workerObjectName("npc"), "npc-worker", "short names keep the plain form");
    assert.ok(workerObjectName(long).length <= 63, `'${workerObjectName(long)}' is longer than 63 characters`);
    assert.match(workerObjectName(long), /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, "the name is a DNS label");
    assert.notEqual(workerObjectName(long), workerObjectName(other), "two long names that share a prefix stay apart");
  });

  test("defaults do not count as edits", () => {
    const desired = deploymentFor(poolSpec());
    const stored = structuredClone(desired);
    stored.spec!.template.spec!.dnsPolicy = "ClusterFirst";
    stored.spec!.revisionHistoryLimit = 10;
    assert.ok(ownedFieldsMatch(stored, desired));
    stored.spec!.template.spec!.containers[0]!.image = "other:1";
    assert.ok(!ownedFieldsMatch(stored, desired));
  });

  test("transition time moves on status change", () => {
    const first = mergeConditions([], [{ type: "Ready", status: "False", reason: "NoReplicasReady", message: "" }], 1, new Date(1000));
    const same = mergeConditions(first, [{ type: "Ready", status: "False", reason: "BelowMinimum", message: "" }], 2, new Date(2000));
    const changed = mergeConditions(same, [{ type: "Ready", status: "True", reason: "ReplicasReady", message: "" }], 2, new Date(3000));
    assert.equal(same[0]?.lastTransitionTime, new Date(1000).toISOString());
    assert.equal(changed[0]?.lastTransitionTime, new Date(3000).toISOString());
  });
});

let fake: FakeKubeApiServer;
let config: KubeConfig;
let apps: AppsV1Api;
let core: CoreV1Api;
let customObjects: CustomObjectsApi;
let namespaceCount = 0;
const running: ModelPoolController[] = [];

before(async () => {
  fake = await FakeKubeApiServer.start();
  config = fake.kubeConfig();
  apps = config.makeApiClient(AppsV1Api);
  core = config.makeApiClient(CoreV1Api);
  customObjects = config.makeApiClient(CustomObjectsApi);
});

afterEach(async () => {
  await Promise.all(running.splice(0).map((controller) => controller.stop()));
});

after(async () => {
  await fake.stop();
});

function startController(namespace: string, identity = "controller-a"): ModelPoolController {
  const controller = new ModelPoolController(
    config,
    { namespace, identity, leaseDurationSeconds: 1, renewDeadlineSeconds: 0.6, retryPeriodSeconds: 0.1, watchRetryDelayMs: 20, queue: { initialBackoffMs: 20 } },
    logger,
  );
  controller.start();
  running.push(controller);
  return controller;
}

function freshNamespace(): string {
  namespaceCount += 1;
  return `pools-${namespaceCount}`;
}

async function createPool(namespace: string, spec: Record<string, unknown> = poolSpec()): Promise<string> {
  const body = { apiVersion: "spillway.dev/v1alpha1", kind: "ModelPool", metadata: { name: "npc" }, spec };
  const created = (await customObjects.createNamespacedCustomObject({ ...modelPools, namespace, body })) as { metadata: { uid: string } };
  return created.metadata.uid;
}

async function updatePoolSpec(namespace: string, change: (spec: Record<string, unknown>) => void): Promise<void> {
  // The controller writes status meanwhile, so a replace can meet a newer resourceVersion.
  await retryOnConflict(async () => {
    const pool = (await customObjects.getNamespacedCustomObject({ ...modelPools, namespace, name: "npc" })) as { spec: Record<string, unknown> };
    change(pool.spec);
    await customObjects.replaceNamespacedCustomObject({ ...modelPools, namespace, name: "npc", body: pool });
  });
}

async function poolStatus(namespace: string): Promise<ModelPoolStatus | undefined> {
  const pool = (await customObjects.getNamespacedCustomObject({ ...modelPools, namespace, name: "npc" })) as { status?: ModelPoolStatus };
  return pool.status;
}

function condition(status: ModelPoolStatus | undefined, type: string) {
  return status?.conditions?.find((candidate) => candidate.type === type);
}

function readDeployment(namespace: string): Promise<V1Deployment> {
  return apps.readNamespacedDeployment({ name: "npc-worker", namespace });
}

async function deploymentWith(namespace: string, check: (deployment: V1Deployment) => boolean, what: string): Promise<V1Deployment> {
  return eventually(async () => {
    const deployment = await readDeployment(namespace);
    return check(deployment) ? deployment : undefined;
  }, what);
}

async function eventReasons(namespace: string): Promise<string[]> {
  const events = await core.listNamespacedEvent({ namespace });
  return events.items.map((event) => event.reason ?? "");
}

describe("controller", () => {
  test("creates worker objects", async () => {
    const namespace = freshNamespace();
    const uid = await createPool(namespace);
    startController(namespace);
    const deployment = await deploymentWith(namespace, () => true, "the Deployment");
    const service = await eventually(() => core.readNamespacedService({ name: "npc-worker", namespace }), "the Service");
    assert.equal(deployment.metadata?.ownerReferences?.[0]?.uid, uid);
    assert.equal(deployment.metadata?.ownerReferences?.[0]?.blockOwnerDeletion, true);
    assert.equal(deployment.metadata?.labels?.["spillway.dev/pool"], "npc");
    assert.equal(deployment.spec?.template.spec?.containers[0]?.readinessProbe?.httpGet?.path, "/readyz");
    assert.equal(service.metadata?.ownerReferences?.[0]?.uid, uid);
    assert.equal(service.spec?.clusterIP, "None");
    const status = await eventually(async () => ((await poolStatus(namespace))?.desiredReplicas === 1 ? poolStatus(namespace) : undefined), "status");
    assert.equal(status?.observedGeneration, 1);
    assert.equal(condition(status, "Ready")?.reason, "NoReplicasReady");
    assert.ok((await eventReasons(namespace)).includes("CreatedDeployment"));
  });

  test("reports ready replicas", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    const deployment = await deploymentWith(namespace, () => true, "the Deployment");
    const stored = fake.store.get("deployments.apps", namespace, "npc-worker")!;
    stored.status = { observedGeneration: deployment.metadata?.generation, replicas: 1, updatedReplicas: 1, readyReplicas: 1 };
    fake.store.update("deployments.apps", stored, "status");
    const status = await eventually(async () => {
      const current = await poolStatus(namespace);
      return condition(current, "Ready")?.status === "True" ? current : undefined;
    }, "Ready");
    assert.equal(status.readyReplicas, 1);
    assert.equal(condition(status, "Ready")?.reason, "ReplicasReady");
    assert.equal(condition(status, "Progressing")?.reason, "Stable");
    assert.equal(condition(status, "Degraded")?.status, "False");
  });

  test("follows replicas.min", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    await deploymentWith(namespace, () => true, "the Deployment");
    await updatePoolSpec(namespace, (spec) => (spec.replicas = { min: 2, max: 3 }));
    await deploymentWith(namespace, (deployment) => deployment.spec?.replicas === 2, "two replicas");
    const reasons = await eventually(async () => ((await eventReasons(namespace)).includes("Scaled") ? eventReasons(namespace) : undefined), "a Scaled event");
    assert.ok(reasons.includes("Scaled"));
  });

  test("restores hand edits", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    const deployment = await deploymentWith(namespace, () => true, "the Deployment");
    deployment.spec!.replicas = 5;
    deployment.spec!.template.spec!.containers[0]!.image = "someone/else:latest";
    deployment.metadata!.annotations = { note: "kept" };
    await apps.replaceNamespacedDeployment({ name: "npc-worker", namespace, body: deployment });
    const restored = await deploymentWith(
      namespace,
      (current) => current.spec?.replicas === 3 && current.spec.template.spec?.containers[0]?.image === "registry.example.com/spillway/worker:0.1.0",
      "the restored Deployment",
    );
    assert.equal(restored.metadata?.annotations?.note, "kept");
  });

  test("recreates a deleted Deployment", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    const first = await deploymentWith(namespace, () => true, "the Deployment");
    await apps.deleteNamespacedDeployment({ name: "npc-worker", namespace });
    const second = await deploymentWith(namespace, (deployment) => deployment.metadata?.uid !== first.metadata?.uid, "a new Deployment");
    assert.equal(second.spec?.replicas, 1);
  });

  test("deleted pool takes its objects", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    await deploymentWith(namespace, () => true, "the Deployment");
    await eventually(async () => ((await poolStatus(namespace))?.desiredReplicas === 1 ? true : undefined), "status");
    // A reconcile still running could recreate a dependent after its owner is gone, which this fake,
    // unlike Kubernetes, never collects; let the controller settle first.
    await new Promise((resolve) => setTimeout(resolve, 200));
    await customObjects.deleteNamespacedCustomObject({ ...modelPools, namespace, name: "npc" });
    await fake.collectGarbage();
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.equal(fake.store.get("deployments.apps", namespace, "npc-worker"), undefined);
    assert.equal(fake.store.get("services", namespace, "npc-worker"), undefined);
  });

  test("invalid pool is Degraded", async () => {
    const namespace = freshNamespace();
    await createPool(namespace, poolSpec({ replicas: { min: 3, max: 1 } }));
    startController(namespace);
    const status = await eventually(async () => {
      const current = await poolStatus(namespace);
      return condition(current, "Degraded") === undefined ? undefined : current;
    }, "a Degraded condition");
    assert.equal(condition(status, "Degraded")?.status, "True");
    assert.equal(condition(status, "Degraded")?.reason, "InvalidSpec");
    const events = await eventually(async () => {
      const list = await core.listNamespacedEvent({ namespace });
      return list.items.length > 0 ? list.items : undefined;
    }, "an Event");
    assert.equal(events[0]?.type, "Warning");
    assert.match(events[0]?.message ?? "", /spec\.replicas/);
    assert.equal(fake.store.get("deployments.apps", namespace, "npc-worker"), undefined);
  });

  test("survives dropped watches", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    await deploymentWith(namespace, () => true, "the Deployment");
    fake.dropWatches();
    await updatePoolSpec(namespace, (spec) => (spec.replicas = { min: 2, max: 3 }));
    await deploymentWith(namespace, (deployment) => deployment.spec?.replicas === 2, "two replicas");
  });

  test("survives watch errors", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    await deploymentWith(namespace, () => true, "the Deployment");
    fake.injectWatchError();
    await updatePoolSpec(namespace, (spec) => (spec.replicas = { min: 3, max: 3 }));
    await deploymentWith(namespace, (deployment) => deployment.spec?.replicas === 3, "three replicas");
  });

  test("relists after 410 Gone", async () => {
    const namespace = freshNamespace();
    await createPool(namespace);
    startController(namespace);
    await deploymentWith(namespace, () => true, "the Deployment");
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "unrelated" } } });
    const listsBefore = poolLists(namespace);
    fake.expireWatchHistoryBefore(fake.store.resourceVersion);
    fake.dropWatches();
    await updatePoolSpec(namespace, (spec) => (spec.replicas = { min: 2, max: 3 }));
    await deploymentWith(namespace, (deployment) => deployment.spec?.replicas === 2, "two replicas");
    assert.ok(poolLists(namespace) > listsBefore);
  });

  test("one leader at a time", async () => {
    const namespace = freshNamespace();
    const first = startController(namespace, "controller-a");
    const second = startController(namespace, "controller-b");
    await eventually(() => Promise.resolve(first.isLeader || second.isLeader ? true : undefined), "a leader");
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(Number(first.isLeader) + Number(second.isLeader), 1);
    const [leader, standby] = first.isLeader ? [first, second] : [second, first];
    await createPool(namespace);
    await deploymentWith(namespace, () => true, "the Deployment");
    const events = await core.listNamespacedEvent({ namespace });
    const instances = new Set(events.items.map((event) => event.reportingInstance));
    assert.deepEqual([...instances], [first.isLeader ? "controller-a" : "controller-b"]);

    await leader.stop();
    await eventually(() => Promise.resolve(standby.isLeader ? true : undefined), "the standby to lead", 1500);
    await updatePoolSpec(namespace, (spec) => (spec.replicas = { min: 2, max: 3 }));
    await deploymentWith(namespace, (deployment) => deployment.spec?.replicas === 2, "two replicas");
  });
});

describe("list and watch", () => {
  test("stops while the watch opens", async () => {
    const namespace = freshNamespace();
    const watch = new ListWatch<V1Deployment>({
      kubeConfig: config,
      path: `/apis/apps/v1/namespaces/${namespace}/deployments`,
      list: async () => ({ items: [], resourceVersion: (await apps.listNamespacedDeployment({ namespace })).metadata?.resourceVersion ?? "" }),
      onChange: () => undefined,
      logger,
    });
    await watch.start();
    // The watch request is in flight now; stopping must end it instead of waiting for its timeout.
    const stopped = await Promise.race([watch.stop().then(() => true), new Promise((resolve) => setTimeout(() => resolve(false), 2000))]);
    assert.equal(stopped, true, "stop() returned within 2 s");
    await eventually(() => Promise.resolve(fake.openWatchCount === 0 ? true : undefined), "the watch connection to close");
  });
});

describe("leader election", () => {
  test("steps down when the Lease hangs", async () => {
    const namespace = freshNamespace();
    const controller = startController(namespace);
    await eventually(() => Promise.resolve(controller.isLeader ? true : undefined), "leadership");
    fake.stallRequests((request) => request.path.startsWith(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`));
    try {
      // The renew deadline is 0.6 s, so a leader whose calls hang must give up well within 2 s.
      await eventually(() => Promise.resolve(controller.isLeader ? undefined : true), "stepping down", 2000);
    } finally {
      fake.releaseStalled();
    }
    await eventually(() => Promise.resolve(controller.isLeader ? true : undefined), "leading again once the API answers");
  });
});

/** Lists (not watches) of ModelPools the fake API server answered in a namespace. */
function poolLists(namespace: string): number {
  return fake.requests.filter((request) => request.method === "GET" && request.path === `/apis/spillway.dev/v1alpha1/namespaces/${namespace}/modelpools` && request.query.get("watch") !== "true").length;
}
