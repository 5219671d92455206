import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, test } from "node:test";

import { parse } from "yaml";

import { configSchema } from "../controller/config/schema.ts";
import { desiredService, workerLabels, workerPort } from "../controller/kubernetes/worker-objects.ts";
import { runHelm } from "../scripts/helm.ts";
import { currentChartDashboards as readChartDashboards } from "../scripts/render-manifests.ts";
import { allFeaturesValues, chartPath, findObject, release, renderObjects, template } from "./support/chart.ts";
import { unknownFields, validateWithModel, type KubeObject } from "./support/kube-validation.ts";

type Labels = Record<string, string>;
type Container = { name: string; args: string[]; env: Array<{ name: string; valueFrom?: { secretKeyRef?: { name: string; key: string } } }> } & Record<string, unknown>;

const packageVersion = (JSON.parse(readFileSync(path.join(chartPath, "..", "..", "package.json"), "utf8")) as { version: string }).version;
const defaultObjects = renderObjects();
const allFeatureObjects = renderObjects(["-f", allFeaturesValues]);

function podTemplate(deployment: KubeObject): { metadata: { labels: Labels; annotations: Labels }; spec: Record<string, unknown> & { containers: Container[] } } {
  return (deployment.spec as { template: ReturnType<typeof podTemplate> }).template;
}

function isSubset(selector: Labels, labels: Labels): boolean {
  return Object.entries(selector).every(([key, value]) => labels[key] === value);
}

describe("Helm chart lint", () => {
  for (const [name, args] of [
    ["default values", []],
    ["every feature on", ["-f", allFeaturesValues]],
  ] as const) {
    test(`passes strict lint with ${name}`, () => {
      const result = runHelm(["lint", "--strict", chartPath, ...args]);
      assert.equal(result.status, 0, `helm lint --strict failed:\n${result.stdout}\n${result.stderr}`);
    });
  }
});

describe("Helm chart objects", () => {
  for (const [name, objects] of [
    ["default values", defaultObjects],
    ["every feature on", allFeatureObjects],
  ] as const) {
    test(`valid per kubernetes-models with ${name}`, () => {
      for (const object of objects.filter((candidate) => candidate.kind !== "ModelPool")) {
        assert.doesNotThrow(() => validateWithModel(object), `${object.kind}/${object.metadata.name} is invalid`);
        assert.deepEqual(unknownFields(object), [], `${object.kind}/${object.metadata.name} has fields its model does not declare`);
      }
    });

    test(`every object in the release namespace with ${name}`, () => {
      const dashboardNamespace = name === "every feature on" ? "monitoring" : release.namespace;
      for (const object of objects.filter((candidate) => candidate.kind !== "ModelPool")) {
        const expected = object.metadata.name.includes("-dashboard-") ? dashboardNamespace : release.namespace;
        assert.equal(object.metadata.namespace, expected, `${object.kind}/${object.metadata.name} namespace`);
      }
    });
  }

  test("unknown-field check finds a misspelled field", () => {
    const deployment = structuredClone(findObject(defaultObjects, "Deployment", "spillway"));
    const container = podTemplate(deployment).spec.containers[0]!;
    container.readinesProbe = container.readinessProbe;

    assert.deepEqual(unknownFields(deployment), ["spec.template.spec.containers[0].readinesProbe: unknown field of IContainer"], "the misspelled probe");
  });

  test("model validation finds a wrong type", () => {
    const deployment = structuredClone(findObject(defaultObjects, "Deployment", "spillway"));
    (deployment.spec as Record<string, unknown>).replicas = "two";

    assert.throws(() => validateWithModel(deployment), /replicas/, "a string replica count");
  });

  test("default objects are the expected kinds", () => {
    const kinds = defaultObjects.map((object) => `${object.kind}/${object.metadata.name}`).sort();
    assert.deepEqual(
      kinds.filter((kind) => !kind.includes("-dashboard-")),
      [
        "ConfigMap/spillway",
        "Deployment/spillway",
        "Pod/spillway-test-models",
        "Role/spillway",
        "RoleBinding/spillway",
        "Service/spillway",
        "ServiceAccount/spillway",
      ],
      "objects rendered with default values",
    );
  });

  test("optional features render their objects", () => {
    const kinds = new Set(allFeatureObjects.map((object) => `${object.kind}/${object.metadata.name}`));
    for (const expected of ["ServiceMonitor/spillway-gateway", "ServiceMonitor/spillway-workers", "NetworkPolicy/spillway-workers", "ModelPool/npc", "ModelPool/quest"]) {
      assert.ok(kinds.has(expected), `${expected} is missing`);
    }
    assert.equal(defaultObjects.some((object) => ["ServiceMonitor", "NetworkPolicy", "ModelPool"].includes(object.kind)), false, "optional objects rendered by default");
  });
});

describe("Helm chart values", () => {
  const cases: Array<{ name: string; args: string[]; message: RegExp }> = [
    { name: "string port", args: ["--set", "config.gateway.port=x"], message: /config\.gateway\.port: Invalid type\. Expected: integer, given: string/ },
    { name: "unknown config key", args: ["--set", "config.gatway.port=8080"], message: /config: Additional property gatway is not allowed/ },
    { name: "unknown top-level value", args: ["--set", "replicas=2"], message: /Additional property replicas is not allowed/ },
    { name: "pools in config", args: ["--set", "config.pools[0].name=npc", "--set", "config.pools[0].variants[0].quant=Q4_K_M", "--set", "config.pools[0].variants[0].model=a.gguf"], message: /config\.pools: Array must have at most 0 items/ },
    { name: "loopback gateway host", args: ["--set", "config.gateway.host=127.0.0.1"], message: /config\.gateway\.host is 127\.0\.0\.1, a loopback address/ },
    { name: "no tenant keys", args: ["--set", "config.auth.keys=null"], message: /config\.auth\.keys is empty/ },
    { name: "tenant key without Secret", args: ["--set", "config.auth.keys[0].name=a", "--set", "config.auth.keys[0].keyEnv=STUDIO_Z_KEY"], message: /config\.auth\.keys\[0\]\.keyEnv is STUDIO_Z_KEY, but no secretEnv entry/ },
    { name: "admin key in secretEnv", args: ["--set", "secretEnv.SPILLWAY_ADMIN_KEY.secretName=a", "--set", "secretEnv.SPILLWAY_ADMIN_KEY.key=b"], message: /secretEnv\.SPILLWAY_ADMIN_KEY is set, but the admin key comes from adminKey\.existingSecret/ },
    { name: "missing sample file", args: ["--set", "samples.enabled=true", "--set", "samples.files[0]=nope.yaml"], message: /samples\.files names nope\.yaml/ },
    { name: "test key without Secret", args: ["--set", "tests.keyEnv=OTHER_KEY"], message: /tests\.keyEnv is OTHER_KEY, which is not a secretEnv entry/ },
  ];
  for (const { name, args, message } of cases) {
    test(`rejects ${name}`, () => {
      const result = template(args);
      assert.notEqual(result.status, 0, `helm template ${args.join(" ")} succeeded`);
      assert.match(result.stderr, message, "Helm's error message");
    });
  }

  test("config change rolls the pods", () => {
    const checksum = (objects: KubeObject[]) => podTemplate(findObject(objects, "Deployment", "spillway")).metadata.annotations["checksum/config"];
    const base = checksum(defaultObjects);

    assert.match(base ?? "", /^[0-9a-f]{64}$/, "checksum annotation");
    assert.notEqual(checksum(renderObjects(["--set", "config.gateway.maxBodyBytes=8388608"])), base, "checksum after a config change");
    assert.equal(checksum(renderObjects(["--set", "service.port=8081"])), base, "checksum after a change outside config");
  });
});

describe("Helm chart controller", () => {
  const deployment = findObject(defaultObjects, "Deployment", "spillway");
  const pod = podTemplate(deployment);
  const container = pod.spec.containers[0]!;

  test("runs the controller command", () => {
    assert.deepEqual(
      container.args,
      ["controller", "--config", "/etc/spillway/spillway.yaml", "--state-dir", "/var/lib/spillway", "--worker-admin-secret", "spillway-admin"],
      "container args",
    );
    assert.deepEqual(container.command, ["spillway"], "container command");
    assert.equal(container.image, `spillway/controller:${packageVersion}`, "image tagged with the package version");
  });

  test("reads keys from Secrets only", () => {
    const admin = container.env.find((variable) => variable.name === "SPILLWAY_ADMIN_KEY");
    assert.deepEqual(admin?.valueFrom?.secretKeyRef, { name: "spillway-admin", key: "admin-key" }, "admin key source");
    for (const variable of container.env) {
      assert.ok(variable.valueFrom?.secretKeyRef !== undefined, `${variable.name} does not come from a Secret`);
    }
  });

  test("mounted config is valid and wired", () => {
    const configMap = findObject(defaultObjects, "ConfigMap", "spillway");
    const result = configSchema.safeParse(parse((configMap.data as Labels)["spillway.yaml"]!));
    assert.ok(result.success, `spillway.yaml fails configSchema: ${result.error?.message}`);

    assert.equal(result.data.gateway.host, "0.0.0.0", "gateway.host");
    assert.equal(result.data.gateway.port, 8080, "gateway.port");
    assert.ok(result.data.auth.keys.length > 0, "at least one tenant key");
    const variables = new Set(container.env.map((variable) => variable.name));
    for (const tenant of result.data.auth.keys) {
      assert.ok(tenant.keyEnv !== undefined, `tenant ${tenant.name} names a key variable`);
      assert.ok(variables.has(tenant.keyEnv), `tenant ${tenant.name} has no key variable`);
    }
    assert.ok(variables.has(result.data.overflow.gemini?.apiKeyEnv ?? ""), "Gemini key variable");
    assert.ok(variables.has(result.data.auth.adminKeyEnv), "admin key variable");
  });

  test("probes and drain fit the gateway", () => {
    const http = (container.ports as Array<{ name: string; containerPort: number }>).find((port) => port.name === "http");
    assert.equal(http?.containerPort, 8080, "container port http");
    assert.equal((container.readinessProbe as { httpGet: { path: string } }).httpGet.path, "/readyz", "readiness path");
    assert.equal((container.livenessProbe as { httpGet: { path: string } }).httpGet.path, "/healthz", "liveness path");
    const preStop = (container.lifecycle as { preStop: { sleep: { seconds: number } } }).preStop.sleep.seconds;
    assert.ok((pod.spec.terminationGracePeriodSeconds as number) >= preStop + 30, "grace period covers preStop and a 30 s drain");
  });

  test("runs non-root with a read-only root", () => {
    const podSecurity = pod.spec.securityContext as { runAsNonRoot: boolean; runAsUser: number };
    const security = container.securityContext as { readOnlyRootFilesystem: boolean; allowPrivilegeEscalation: boolean; capabilities: { drop: string[] } };
    assert.equal(podSecurity.runAsNonRoot, true, "runAsNonRoot");
    assert.equal(podSecurity.runAsUser, 10001, "runAsUser");
    assert.equal(security.readOnlyRootFilesystem, true, "readOnlyRootFilesystem");
    assert.equal(security.allowPrivilegeEscalation, false, "allowPrivilegeEscalation");
    assert.deepEqual(security.capabilities.drop, ["ALL"], "dropped capabilities");
    assert.ok(container.resources !== undefined, "resources set");
  });

  test("Service reaches the gateway port", () => {
    const service = findObject(defaultObjects, "Service", "spillway");
    const spec = service.spec as { type: string; selector: Labels; ports: Array<{ name: string; port: number; targetPort: string }> };
    assert.equal(spec.type, "ClusterIP", "Service type");
    assert.ok(isSubset(spec.selector, pod.metadata.labels), "Service selects the controller pods");
    assert.deepEqual(spec.ports.map(({ name, port, targetPort }) => ({ name, port, targetPort })), [{ name: "http", port: 80, targetPort: "http" }], "Service ports");
  });

  test("Role grants exactly the controller's rules", () => {
    const expected = [
      ["spillway.dev", "modelpools", "get,list,watch"],
      ["spillway.dev", "modelpools/status", "patch,update"],
      ["spillway.dev", "modelpools/finalizers", "update"],
      ["apps", "deployments", "create,get,list,update,watch"],
      ["apps", "deployments/scale", "get,update"],
      ["", "services", "create,get,update"],
      ["", "configmaps", "create,get,update"],
      ["", "pods", "get,list,patch,watch"],
      ["", "events", "create"],
      ["coordination.k8s.io", "leases", "create,get,update"],
    ];
    const rules = findObject(defaultObjects, "Role", "spillway").rules as Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>;
    const granted = rules.flatMap((rule) =>
      rule.apiGroups.flatMap((group) => rule.resources.map((resource) => [group, resource, [...rule.verbs].sort().join(",")])),
    );
    assert.deepEqual(granted.sort(), expected.sort(), "Role rules");

    const binding = findObject(defaultObjects, "RoleBinding", "spillway");
    assert.deepEqual(binding.subjects, [{ kind: "ServiceAccount", name: pod.spec.serviceAccountName, namespace: release.namespace }], "RoleBinding subject");
  });
});

describe("Helm chart monitoring and network", () => {
  const pool = "npc";
  const workerPodLabels = workerLabels(pool);
  const controllerPodLabels = podTemplate(findObject(allFeatureObjects, "Deployment", "spillway")).metadata.labels;

  test("NetworkPolicy selects the worker pods", () => {
    const spec = findObject(allFeatureObjects, "NetworkPolicy", "spillway-workers").spec as {
      podSelector: { matchLabels: Labels };
      policyTypes: string[];
      ingress: Array<{ from: Array<{ podSelector?: { matchLabels: Labels }; namespaceSelector?: { matchLabels: Labels } }>; ports: Array<{ port: number }> }>;
    };
    assert.ok(isSubset(spec.podSelector.matchLabels, workerPodLabels), "policy selects worker pods");
    assert.equal(isSubset(spec.podSelector.matchLabels, controllerPodLabels), false, "policy leaves the controller pods alone");
    assert.deepEqual(spec.policyTypes, ["Ingress"], "policy types");

    const [fromController, fromScraper] = spec.ingress;
    assert.ok(isSubset(fromController!.from[0]!.podSelector!.matchLabels, controllerPodLabels), "first rule admits the controller pods");
    assert.deepEqual(fromController!.ports.map((port) => port.port), [workerPort], "controller rule port");
    assert.deepEqual(fromScraper!.from[0]!.namespaceSelector?.matchLabels, { "kubernetes.io/metadata.name": "monitoring" }, "scraper namespace");
    assert.deepEqual(fromScraper!.from[0]!.podSelector?.matchLabels, { "app.kubernetes.io/name": "prometheus" }, "scraper pods, in the same peer");
    assert.equal(spec.ingress.length, 2, "ingress rules");
  });

  test("NetworkPolicy without scraper has one rule", () => {
    const objects = renderObjects(["--set", "networkPolicy.enabled=true"]);
    const spec = findObject(objects, "NetworkPolicy", "spillway-workers").spec as { ingress: unknown[] };
    assert.equal(spec.ingress.length, 1, "only the controller rule");
  });

  test("ServiceMonitors select gateway and workers", () => {
    const gatewayMonitor = findObject(allFeatureObjects, "ServiceMonitor", "spillway-gateway").spec as { selector: { matchLabels: Labels }; endpoints: Array<{ port: string; path: string }> };
    const gatewayService = findObject(allFeatureObjects, "Service", "spillway");
    assert.ok(isSubset(gatewayMonitor.selector.matchLabels, gatewayService.metadata.labels as Labels), "gateway monitor selects the Service");
    assert.deepEqual(gatewayMonitor.endpoints.map(({ port, path }) => [port, path]), [["http", "/metrics"]], "gateway endpoint");

    const workerMonitor = findObject(allFeatureObjects, "ServiceMonitor", "spillway-workers").spec as {
      selector: { matchLabels: Labels };
      endpoints: Array<{ port: string; path: string; relabelings: Array<{ sourceLabels: string[]; targetLabel: string }> }>;
    };
    const workerService = desiredService({ name: pool, namespace: release.namespace, uid: "uid" });
    assert.ok(isSubset(workerMonitor.selector.matchLabels, workerService.metadata!.labels!), "worker monitor selects the worker Service");
    assert.ok(workerService.spec!.ports!.some((port) => port.name === workerMonitor.endpoints[0]!.port), "worker Service has the scraped port");
    const poolRelabel = workerMonitor.endpoints[0]!.relabelings.find((relabel) => relabel.targetLabel === "pool");
    const poolLabelName = "spillway.dev/pool".replace(/[^a-zA-Z0-9_]/g, "_");
    assert.deepEqual(poolRelabel?.sourceLabels, [`__meta_kubernetes_service_label_${poolLabelName}`], "pool label from the Service");
    assert.ok(workerService.metadata!.labels!["spillway.dev/pool"] === pool, "worker Service carries the pool label");
  });

  test("dashboards become sidecar ConfigMaps", () => {
    const dashboards = allFeatureObjects.filter((object) => object.metadata.name.startsWith("spillway-dashboard-"));
    const files = readChartDashboards();
    assert.ok(files.size > 0, "charts/spillway/dashboards has no dashboards: run npm run render:manifests");
    assert.equal(dashboards.length, files.size, "one ConfigMap per dashboard file");
    for (const configMap of dashboards) {
      assert.equal((configMap.metadata.labels as Labels).grafana_dashboard, "1", `${configMap.metadata.name} sidecar label`);
      assert.equal((configMap.metadata.annotations as Labels).grafana_folder, "Spillway", `${configMap.metadata.name} folder annotation`);
      const [[fileName, content]] = Object.entries(configMap.data as Labels) as [[string, string]];
      assert.equal(content, files.get(fileName)?.trimEnd(), `${configMap.metadata.name} content`);
      assert.ok(Buffer.byteLength(content) < 256 * 1024, `${fileName} fits kubectl's last-applied annotation`);
    }
  });

  test("dashboard label is configurable", () => {
    const objects = renderObjects(["--set", "dashboards.label=grafana_dashboard_spillway", "--set", "dashboards.labelValue=yes"]);
    const dashboards = objects.filter((object) => object.metadata.name.startsWith("spillway-dashboard-"));
    assert.ok(dashboards.length === readChartDashboards().size, "dashboard ConfigMaps rendered");
    for (const configMap of dashboards) {
      assert.equal((configMap.metadata.labels as Labels).grafana_dashboard_spillway, "yes", `${configMap.metadata.name} custom label`);
    }
    assert.equal(renderObjects(["--set", "dashboards.enabled=false"]).some((object) => object.metadata.name.includes("-dashboard-")), false, "disabled dashboards");
  });
});
