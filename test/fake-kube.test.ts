import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import {
  ApiException,
  AppsV1Api,
  CoordinationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  VersionApi,
  Watch,
  setHeaderOptions,
  type V1Deployment,
} from "@kubernetes/client-node";

import { FakeKubeApiServer } from "./support/fake-kube/index.ts";

interface WatchEvent {
  type: string;
  object: { metadata?: { name?: string; resourceVersion?: string }; code?: number; reason?: string };
}

interface OpenedWatch {
  events: WatchEvent[];
  /** Resolves with the error passed to the done callback, null for a clean end. */
  done: Promise<unknown>;
  controller: AbortController;
}

const modelPools = { group: "spillway.dev", version: "v1alpha1", plural: "modelpools" };
const mergePatch = setHeaderOptions("Content-Type", PatchStrategy.MergePatch);

let fake: FakeKubeApiServer;
let config: KubeConfig;
let core: CoreV1Api;
let apps: AppsV1Api;
let customObjects: CustomObjectsApi;
let coordination: CoordinationV1Api;
let namespaceCount = 0;

/** Returns a namespace no other test uses, so tests cannot see each other's objects. */
function freshNamespace(): string {
  namespaceCount += 1;
  return `test-${namespaceCount}`;
}

/** Awaits a client call that must fail and returns its HTTP code and Status reason. */
async function rejection(call: Promise<unknown>): Promise<{ code: number; reason: string }> {
  try {
    await call;
  } catch (error) {
    assert.ok(error instanceof ApiException, `expected an ApiException, got ${String(error)}`);
    const status = JSON.parse(error.body as string) as { reason: string };
    return { code: error.code, reason: status.reason };
  }
  assert.fail("expected the call to be rejected");
}

async function openWatch(path: string, query: Record<string, string> = {}): Promise<OpenedWatch> {
  const events: WatchEvent[] = [];
  let finish: (error: unknown) => void = () => undefined;
  const done = new Promise<unknown>((resolve) => (finish = resolve));
  const controller = await new Watch(config).watch(path, query, (type, object) => events.push({ type, object: object as WatchEvent["object"] }), finish);
  return { events, done, controller };
}

async function waitFor(condition: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 2000;
  while (!(await condition())) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

function deployment(name: string, replicas = 1): V1Deployment {
  const labels = { app: name };
  return {
    metadata: { name, labels },
    spec: {
      replicas,
      selector: { matchLabels: labels },
      template: { metadata: { labels }, spec: { containers: [{ name: "worker", image: "spillway/worker:test" }] } },
    },
  };
}

function modelPool(name: string): Record<string, unknown> {
  return {
    apiVersion: "spillway.dev/v1alpha1",
    kind: "ModelPool",
    metadata: { name },
    spec: { variants: [{ quant: "Q4_K_M", model: "hf:example/tiny:Q4_K_M" }], replicas: { min: 1, max: 2 } },
  };
}

before(async () => {
  fake = await FakeKubeApiServer.start();
  config = fake.kubeConfig();
  core = config.makeApiClient(CoreV1Api);
  apps = config.makeApiClient(AppsV1Api);
  customObjects = config.makeApiClient(CustomObjectsApi);
  coordination = config.makeApiClient(CoordinationV1Api);
});

after(async () => {
  await fake.stop();
});

describe("client library", () => {
  test("constructs the APIs", () => {
    const kubeConfig = new KubeConfig();
    kubeConfig.loadFromOptions({ clusters: [{ name: "c", server: "http://127.0.0.1:1" }], users: [{ name: "u" }], contexts: [{ name: "x", cluster: "c", user: "u" }], currentContext: "x" });
    assert.ok(kubeConfig.makeApiClient(CoreV1Api) instanceof CoreV1Api);
    assert.ok(kubeConfig.makeApiClient(AppsV1Api) instanceof AppsV1Api);
    assert.ok(kubeConfig.makeApiClient(CustomObjectsApi) instanceof CustomObjectsApi);
    assert.ok(kubeConfig.makeApiClient(CoordinationV1Api) instanceof CoordinationV1Api);
  });

  test("reads the server version", async () => {
    const version = await config.makeApiClient(VersionApi).getCode();
    assert.equal(version.major, "1");
  });
});

describe("objects", () => {
  test("create then AlreadyExists", async () => {
    const namespace = freshNamespace();
    const created = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings" }, data: { a: "1" } } });
    assert.equal(created.metadata?.namespace, namespace);
    assert.match(created.metadata?.uid ?? "", /^[0-9a-f-]{36}$/);
    assert.match(created.metadata?.resourceVersion ?? "", /^\d+$/);
    assert.ok(created.metadata?.creationTimestamp instanceof Date);

    const duplicate = await rejection(core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings" } } }));
    assert.equal(duplicate.code, 409);
    assert.equal(duplicate.reason, "AlreadyExists");
  });

  test("get and NotFound", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedSecret({ namespace, body: { metadata: { name: "key" }, stringData: { token: "abc" } } });

    const secret = await core.readNamespacedSecret({ name: "key", namespace });
    assert.equal(secret.data?.token, Buffer.from("abc").toString("base64"));
    assert.equal(secret.stringData, undefined);

    const missing = await rejection(core.readNamespacedSecret({ name: "absent", namespace }));
    assert.equal(missing.code, 404);
    assert.equal(missing.reason, "NotFound");
  });

  test("list with selectors", async () => {
    const namespace = freshNamespace();
    for (const [name, tier] of [["a", "gpu"], ["b", "cpu"], ["c", "gpu"]] as const) {
      await core.createNamespacedPod({ namespace, body: { metadata: { name, labels: { tier } }, spec: { containers: [] } } });
    }
    const created = await core.readNamespacedPod({ name: "c", namespace });

    const all = await core.listNamespacedPod({ namespace, resourceVersion: created.metadata?.resourceVersion });
    assert.deepEqual(all.items.map((pod) => pod.metadata?.name), ["a", "b", "c"]);
    assert.ok(Number(all.metadata?.resourceVersion) >= Number(created.metadata?.resourceVersion));

    const gpu = await core.listNamespacedPod({ namespace, labelSelector: "tier=gpu" });
    assert.deepEqual(gpu.items.map((pod) => pod.metadata?.name), ["a", "c"]);

    const notGpu = await core.listNamespacedPod({ namespace, labelSelector: "tier,tier notin (gpu)" });
    assert.deepEqual(notGpu.items.map((pod) => pod.metadata?.name), ["b"]);

    const byName = await core.listNamespacedPod({ namespace, fieldSelector: "metadata.name=b" });
    assert.deepEqual(byName.items.map((pod) => pod.metadata?.name), ["b"]);
  });

  test("list ahead of latest version", async () => {
    const failure = await rejection(core.listNamespacedPod({ namespace: freshNamespace(), resourceVersion: "999999999" }));
    assert.equal(failure.code, 504);
  });

  test("replace with stale version", async () => {
    const namespace = freshNamespace();
    const first = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings" }, data: { a: "1" } } });
    const second = await core.replaceNamespacedConfigMap({ name: "settings", namespace, body: { ...first, data: { a: "2" } } });
    assert.notEqual(second.metadata?.resourceVersion, first.metadata?.resourceVersion);

    const stale = await rejection(core.replaceNamespacedConfigMap({ name: "settings", namespace, body: { ...first, data: { a: "3" } } }));
    assert.equal(stale.code, 409);
    assert.equal(stale.reason, "Conflict");

    const stored = await core.readNamespacedConfigMap({ name: "settings", namespace });
    assert.equal(stored.data?.a, "2");
  });

  test("merge patch", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings", labels: { keep: "yes", drop: "yes" } }, data: { a: "1" } } });

    const patched = await core.patchNamespacedConfigMap(
      { name: "settings", namespace, body: { metadata: { labels: { drop: null } }, data: { b: "2" } } },
      mergePatch,
    );
    assert.deepEqual(patched.metadata?.labels, { keep: "yes" });
    assert.deepEqual(patched.data, { a: "1", b: "2" });
  });

  test("JSON patch", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings" }, data: { a: "1" } } });

    const patched = await core.patchNamespacedConfigMap({
      name: "settings",
      namespace,
      body: [
        { op: "test", path: "/data/a", value: "1" },
        { op: "replace", path: "/data/a", value: "2" },
        { op: "add", path: "/data/b", value: "3" },
      ],
    });
    assert.deepEqual(patched.data, { a: "2", b: "3" });

    const failedTest = await rejection(core.patchNamespacedConfigMap({ name: "settings", namespace, body: [{ op: "test", path: "/data/a", value: "1" }] }));
    assert.equal(failedTest.code, 422);
  });

  test("delete", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings" } } });

    const status = await core.deleteNamespacedConfigMap({ name: "settings", namespace });
    assert.equal(status.status, "Success");

    const readAfterDelete = await rejection(core.readNamespacedConfigMap({ name: "settings", namespace }));
    assert.equal(readAfterDelete.code, 404);
  });

  test("delete returns a service", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedService({ namespace, body: { metadata: { name: "gateway" }, spec: { ports: [{ port: 80 }] } } });

    const deleted = await core.deleteNamespacedService({ name: "gateway", namespace });
    assert.equal(deleted.metadata?.name, "gateway");
  });

  test("finalizers defer deletion", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "held", finalizers: ["spillway.dev/cleanup"] } } });

    await core.deleteNamespacedConfigMap({ name: "held", namespace });
    const marked = await core.readNamespacedConfigMap({ name: "held", namespace });
    assert.ok(marked.metadata?.deletionTimestamp instanceof Date);

    await core.patchNamespacedConfigMap({ name: "held", namespace, body: [{ op: "remove", path: "/metadata/finalizers" }] });
    const readAfterDelete = await rejection(core.readNamespacedConfigMap({ name: "held", namespace }));
    assert.equal(readAfterDelete.code, 404);
  });

  test("KubernetesObjectApi reads a ModelPool", async () => {
    const namespace = freshNamespace();
    await customObjects.createNamespacedCustomObject({ ...modelPools, namespace, body: modelPool("npc") });

    const objects = KubernetesObjectApi.makeApiClient(config);
    const pool = await objects.read({ apiVersion: "spillway.dev/v1alpha1", kind: "ModelPool", metadata: { name: "npc", namespace } });
    assert.equal(pool.metadata?.name, "npc");
  });
});

describe("watch", { timeout: 10_000 }, () => {
  test("sees changes in order", async () => {
    const namespace = freshNamespace();
    const list = await core.listNamespacedConfigMap({ namespace });
    const watch = await openWatch(`/api/v1/namespaces/${namespace}/configmaps`, { resourceVersion: list.metadata!.resourceVersion! });

    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "settings" }, data: { a: "1" } } });
    await core.patchNamespacedConfigMap({ name: "settings", namespace, body: { data: { a: "2" } } }, mergePatch);
    await core.deleteNamespacedConfigMap({ name: "settings", namespace });
    await waitFor(() => watch.events.length === 3, "three events");
    watch.controller.abort();

    assert.deepEqual(watch.events.map((event) => event.type), ["ADDED", "MODIFIED", "DELETED"]);
    const versions = watch.events.map((event) => Number(event.object.metadata?.resourceVersion));
    assert.deepEqual(versions, [...versions].sort((left, right) => left - right));
  });

  test("starts with existing objects", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "existing" } } });

    const watch = await openWatch(`/api/v1/namespaces/${namespace}/configmaps`);
    await waitFor(() => watch.events.length === 1, "the initial event");
    watch.controller.abort();

    assert.equal(watch.events[0]?.type, "ADDED");
    assert.equal(watch.events[0]?.object.metadata?.name, "existing");
  });

  test("selector turns a leaving object into DELETED", async () => {
    const namespace = freshNamespace();
    await core.createNamespacedPod({ namespace, body: { metadata: { name: "worker", labels: { ready: "yes" } }, spec: { containers: [] } } });
    const watch = await openWatch(`/api/v1/namespaces/${namespace}/pods`, { labelSelector: "ready=yes" });
    await waitFor(() => watch.events.length === 1, "the initial event");

    await core.patchNamespacedPod({ name: "worker", namespace, body: { metadata: { labels: { ready: "no" } } } }, mergePatch);
    await waitFor(() => watch.events.length === 2, "the leaving event");
    watch.controller.abort();

    assert.equal(watch.events[1]?.type, "DELETED");
  });

  test("expired version gets 410", async () => {
    const namespace = freshNamespace();
    const old = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "old" } } });
    const latest = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "latest" } } });
    fake.expireWatchHistoryBefore(latest.metadata!.resourceVersion!);

    const watch = await openWatch(`/api/v1/namespaces/${namespace}/configmaps`, { resourceVersion: old.metadata!.resourceVersion! });
    assert.equal(await watch.done, null);

    assert.equal(watch.events.length, 1);
    assert.equal(watch.events[0]?.type, "ERROR");
    assert.equal(watch.events[0]?.object.code, 410);
    assert.equal(watch.events[0]?.object.reason, "Expired");
  });

  test("dropped watch ends", async () => {
    const watch = await openWatch(`/api/v1/namespaces/${freshNamespace()}/configmaps`);
    fake.dropWatches();

    await watch.done;
    assert.equal(fake.openWatchCount, 0);
  });

  test("injected error ends the watch", async () => {
    const watch = await openWatch(`/apis/apps/v1/namespaces/${freshNamespace()}/deployments`);
    fake.injectWatchError({ code: 500, reason: "InternalError" }, "deployments.apps");

    assert.equal(await watch.done, null);
    assert.equal(watch.events[0]?.type, "ERROR");
    assert.equal(watch.events[0]?.object.code, 500);
  });

  test("bookmarks carry the latest version", async () => {
    const watch = await openWatch(`/api/v1/namespaces/${freshNamespace()}/configmaps`, { allowWatchBookmarks: "true" });
    fake.sendBookmarks();
    await waitFor(() => watch.events.length === 1, "a bookmark");
    watch.controller.abort();

    assert.equal(watch.events[0]?.type, "BOOKMARK");
    assert.equal(watch.events[0]?.object.metadata?.resourceVersion, fake.store.resourceVersion);
  });
});

describe("subresources", () => {
  test("status update keeps spec", async () => {
    const namespace = freshNamespace();
    const created = (await customObjects.createNamespacedCustomObject({ ...modelPools, namespace, body: modelPool("npc") })) as ReturnType<typeof modelPool>;
    const status = { observedGeneration: 1, replicas: 1 };
    const body = { ...created, spec: { variants: [] }, status };

    const updated = (await customObjects.replaceNamespacedCustomObjectStatus({ ...modelPools, namespace, name: "npc", body })) as Record<string, unknown>;
    assert.deepEqual(updated.status, status);
    assert.deepEqual(updated.spec, modelPool("npc").spec);
    assert.equal((updated.metadata as { generation: number }).generation, 1);
  });

  test("spec update bumps generation", async () => {
    const namespace = freshNamespace();
    await customObjects.createNamespacedCustomObject({ ...modelPools, namespace, body: modelPool("npc") });

    const patched = (await customObjects.patchNamespacedCustomObject(
      { ...modelPools, namespace, name: "npc", body: { spec: { replicas: { max: 3 } }, status: { replicas: 9 } } },
      mergePatch,
    )) as { metadata: { generation: number }; status?: unknown };
    assert.equal(patched.metadata.generation, 2);
    assert.equal(patched.status, undefined);
  });

  test("update without version is 422", async () => {
    const namespace = freshNamespace();
    await customObjects.createNamespacedCustomObject({ ...modelPools, namespace, body: modelPool("npc") });

    const failure = await rejection(customObjects.replaceNamespacedCustomObject({ ...modelPools, namespace, name: "npc", body: modelPool("npc") }));
    assert.equal(failure.code, 422);
  });

  test("deployment scale", async () => {
    const namespace = freshNamespace();
    await apps.createNamespacedDeployment({ namespace, body: deployment("worker", 2) });

    const scale = await apps.readNamespacedDeploymentScale({ name: "worker", namespace });
    assert.equal(scale.kind, "Scale");
    assert.equal(scale.spec?.replicas, 2);
    assert.equal(scale.status?.selector, "app=worker");

    const patched = await apps.patchNamespacedDeploymentScale({ name: "worker", namespace, body: { spec: { replicas: 4 } } }, mergePatch);
    assert.equal(patched.spec?.replicas, 4);

    const stored = await apps.readNamespacedDeployment({ name: "worker", namespace });
    assert.equal(stored.spec?.replicas, 4);
    assert.equal(stored.metadata?.generation, 2);
  });

  test("deployment status write", async () => {
    const namespace = freshNamespace();
    const created = await apps.createNamespacedDeployment({ namespace, body: deployment("worker") });

    const updated = await apps.replaceNamespacedDeploymentStatus({ name: "worker", namespace, body: { ...created, status: { readyReplicas: 1 } } });
    assert.equal(updated.status?.readyReplicas, 1);
    assert.equal(updated.metadata?.generation, 1);
  });
});

describe("owner references", () => {
  async function ownedConfigMap(namespace: string, owner: V1Deployment): Promise<void> {
    const ownerReference = { apiVersion: "apps/v1", kind: "Deployment", name: owner.metadata!.name!, uid: owner.metadata!.uid!, controller: true };
    await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "owned", ownerReferences: [ownerReference] } } });
  }

  test("background delete cascades", async () => {
    const namespace = freshNamespace();
    const owner = await apps.createNamespacedDeployment({ namespace, body: deployment("worker") });
    await ownedConfigMap(namespace, owner);

    await apps.deleteNamespacedDeployment({ name: "worker", namespace });
    const dependentsLeft = async () => (await core.listNamespacedConfigMap({ namespace })).items.length;
    await waitFor(async () => (await dependentsLeft()) === 0, "the dependent to be deleted");
  });

  test("foreground delete cascades", async () => {
    const namespace = freshNamespace();
    const owner = await apps.createNamespacedDeployment({ namespace, body: deployment("worker") });
    await ownedConfigMap(namespace, owner);

    await apps.deleteNamespacedDeployment({ name: "worker", namespace, propagationPolicy: "Foreground" });
    const dependents = await core.listNamespacedConfigMap({ namespace });
    assert.equal(dependents.items.length, 0);
  });

  test("orphan delete keeps dependents", async () => {
    const namespace = freshNamespace();
    const owner = await apps.createNamespacedDeployment({ namespace, body: deployment("worker") });
    await ownedConfigMap(namespace, owner);

    await apps.deleteNamespacedDeployment({ name: "worker", namespace, propagationPolicy: "Orphan" });
    await fake.collectGarbage();

    const orphan = await core.readNamespacedConfigMap({ name: "owned", namespace });
    assert.equal(orphan.metadata?.ownerReferences, undefined);
  });
});

describe("leases", () => {
  test("update with conflict", async () => {
    const namespace = freshNamespace();
    const body = { metadata: { name: "controller" }, spec: { holderIdentity: "a", leaseDurationSeconds: 15 } };
    const created = await coordination.createNamespacedLease({ namespace, body });

    const renewed = await coordination.replaceNamespacedLease({ name: "controller", namespace, body: { ...created, spec: { ...created.spec, holderIdentity: "a", renewTime: new Date() } } });
    assert.equal(renewed.spec?.holderIdentity, "a");

    const stolen = await rejection(coordination.replaceNamespacedLease({ name: "controller", namespace, body: { ...created, spec: { holderIdentity: "b" } } }));
    assert.equal(stolen.code, 409);
    assert.equal(stolen.reason, "Conflict");
  });
});
