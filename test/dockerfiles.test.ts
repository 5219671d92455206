import assert from "node:assert/strict";
import { existsSync, readFileSync, statSync } from "node:fs";
import { builtinModules } from "node:module";
import path from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { parseWorkerOptions } from "../cli/commands/worker.ts";
import { configSchema } from "../controller/config/schema.ts";
import {
  execForm,
  instructionsOf,
  isIgnored,
  parseCopy,
  parseDockerfile,
  parseLabels,
  stageChain,
  type Dockerfile,
  type Instruction,
} from "./support/dockerfile.ts";

// These checks read docker/Dockerfile against the repository without a Docker engine.
// scripts/check-images.sh builds and runs the images where one can be started, as CI does.

const root = fileURLToPath(new URL("..", import.meta.url));
const read = (file: string) => readFileSync(path.join(root, file), "utf8");
const dockerfile: Dockerfile = parseDockerfile(read("docker/Dockerfile"));
const dockerignore = read(".dockerignore");
const packageJson = JSON.parse(read("package.json")) as {
  version: string;
  license: string;
  bin: Record<string, string>;
  scripts: Record<string, string>;
  dependencies: Record<string, string>;
};
const lockfile = JSON.parse(read("package-lock.json")) as { packages: Record<string, { version?: string; optional?: boolean }> };

const targets = ["controller", "worker", "worker-cuda"] as const;
/** Where each target's HEALTHCHECK path must be served. */
const serverFiles: Record<(typeof targets)[number], string> = {
  controller: "controller/gateway/server.ts",
  worker: "worker/server.ts",
  "worker-cuda": "worker/server.ts",
};

function only(target: string, keyword: string): Instruction {
  const found = instructionsOf(dockerfile, target, keyword);
  assert.ok(found.length > 0, `${target} has a ${keyword} instruction`);
  return found.at(-1)!;
}

function exposedPort(target: string): number {
  return Number(only(target, "EXPOSE").text.replace(/\/tcp$/, ""));
}

/** Lists the files the `sources` stage copies into /app, as repository paths (folders end in `/`). */
function copiedSources(): string[] {
  const stage = dockerfile.stages.find((candidate) => candidate.name === "sources");
  assert.ok(stage !== undefined, "the Dockerfile has a sources stage");
  return stage.instructions
    .filter((instruction) => instruction.keyword === "COPY")
    .flatMap((instruction) => parseCopy(instruction).sources)
    .map((source) => (statSync(path.join(root, source)).isDirectory() ? `${source.replace(/\/$/, "")}/` : source));
}

const importPatterns = [
  /^\s*(?:import|export)\s+(?!type\s)[^'";]*?\sfrom\s+["']([^"']+)["']/gm,
  /^\s*import\s+["']([^"']+)["']/gm,
  /\bimport\(\s*["']([^"']+)["']\s*\)/g,
];

/** Collects every module the bin loads at run time: repository files by path, packages by name. Type-only imports are skipped, because they are erased. */
function runtimeModules(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const queue = [entry];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (files.has(file)) continue;
    files.add(file);
    const text = read(file);
    for (const pattern of importPatterns) {
      for (const [, specifier] of text.matchAll(pattern)) {
        if (specifier!.startsWith(".")) {
          const target = path.posix.normalize(path.posix.join(path.posix.dirname(file), specifier!));
          assert.ok(existsSync(path.join(root, target)), `${file} imports ${specifier}, which exists`);
          queue.push(target);
        } else if (!specifier!.startsWith("node:") && !builtinModules.includes(specifier!)) {
          const parts = specifier!.split("/");
          packages.add(specifier!.startsWith("@") ? parts.slice(0, 2).join("/") : parts[0]!);
        }
      }
    }
  }
  return { files, packages };
}

describe("docker/Dockerfile", () => {
  test("defines the targets build-images.sh builds", () => {
    const names = dockerfile.stages.map((stage) => stage.name);
    for (const target of targets) assert.ok(names.includes(target), `the Dockerfile has a ${target} stage`);
    const defaults = /targets=\(([a-z -]+)\)/.exec(read("scripts/build-images.sh"))?.[1]?.trim().split(/\s+/);
    assert.deepEqual(defaults, [...targets], "build-images.sh builds controller, worker and worker-cuda by default");
    assert.match(packageJson.scripts["build:images"] ?? "", /scripts\/build-images\.sh/, "npm run build:images runs scripts/build-images.sh");
  });

  test("bases are build arguments or earlier stages", () => {
    dockerfile.stages.forEach((stage, index) => {
      const argument = /^\$\{(\w+)\}$/.exec(stage.from)?.[1];
      if (argument !== undefined) {
        assert.ok(dockerfile.globalArgs.get(argument), `${stage.name} is built FROM \${${argument}}, a global ARG with a default`);
      } else {
        const earlier = dockerfile.stages.slice(0, index).map((candidate) => candidate.name);
        assert.ok(earlier.includes(stage.from), `${stage.name} is built FROM ${stage.from}, an earlier stage`);
      }
    });
    assert.match(dockerfile.globalArgs.get("NODE_IMAGE") ?? "", /^node:(22|24)[.-]/, "the default Node base is Node 22 or 24 LTS");
    assert.match(dockerfile.globalArgs.get("CUDA_IMAGE") ?? "", /^nvidia\/cuda:13\./, "the CUDA base has CUDA 13, which node-llama-cpp's CUDA binary links");
  });

  test("copies files that exist and the context keeps", () => {
    dockerfile.stages.forEach((stage, index) => {
      for (const instruction of stage.instructions.filter((candidate) => candidate.keyword === "COPY" || candidate.keyword === "ADD")) {
        assert.equal(instruction.keyword, "COPY", `line ${instruction.line} uses COPY, not ADD`);
        const copy = parseCopy(instruction);
        if (copy.from !== undefined) {
          const earlier = dockerfile.stages.slice(0, index).map((candidate) => candidate.name);
          assert.ok(earlier.includes(copy.from), `line ${copy.line} copies from ${copy.from}, an earlier stage`);
          continue;
        }
        for (const source of copy.sources) {
          assert.ok(existsSync(path.join(root, source)), `line ${copy.line} copies ${source}, which exists`);
          assert.equal(isIgnored(dockerignore, source.replace(/\/$/, "")), false, `.dockerignore keeps ${source} in the context`);
        }
      }
    });
  });

  test("context leaves out dependencies, tests and models", () => {
    for (const excluded of ["node_modules/express/index.js", "test/gateway.test.ts", "docs/kubernetes.md", "worker/model.gguf", ".spillway/usage.jsonl"]) {
      assert.equal(isIgnored(dockerignore, excluded), true, `.dockerignore keeps ${excluded} out`);
    }
  });

  test("runtime imports stay inside the copied sources", () => {
    const entry = packageJson.bin["spillway"]!.replace(/^\.\//, "");
    const { files, packages } = runtimeModules(entry);
    const sources = copiedSources();
    assert.ok(files.size > 20, `the bin loads the command modules through tsx (found ${files.size} files)`);
    for (const file of files) {
      assert.ok(sources.some((source) => file === source || file.startsWith(source)), `${file} is copied by the sources stage`);
      assert.equal(isIgnored(dockerignore, file), false, `.dockerignore keeps ${file} in the context`);
    }
    for (const name of packages) {
      assert.ok(packageJson.dependencies[name] !== undefined, `${name}, imported at run time, is a production dependency (npm ci --omit=dev)`);
    }
  });

  test("installs production dependencies from the lockfile", () => {
    const install = instructionsOf(dockerfile, "deps", "RUN").map((instruction) => instruction.text).join("\n");
    assert.match(install, /npm ci\b/, "the deps stage runs npm ci");
    assert.match(install, /--omit=dev/, "npm ci leaves out devDependencies");
    // An --omit on the command line replaces .npmrc's omit=optional, so it has to be repeated there.
    assert.match(install, /--omit=optional/, "npm ci leaves out node-llama-cpp's optional GPU binaries");
    const copied = instructionsOf(dockerfile, "deps", "COPY").flatMap((instruction) => parseCopy(instruction).sources);
    for (const file of ["package.json", "package-lock.json", ".npmrc"]) assert.ok(copied.includes(file), `the deps stage copies ${file}`);

    const llama = lockfile.packages["node_modules/node-llama-cpp"]?.version;
    assert.ok(llama !== undefined, "the lockfile pins node-llama-cpp");
    assert.equal(lockfile.packages["node_modules/@node-llama-cpp/linux-x64"]?.version, llama, "the CPU binary matches node-llama-cpp's version");
    const cuda = instructionsOf(dockerfile, "deps-cuda", "RUN").map((instruction) => instruction.text).join("\n");
    assert.match(cuda, /packages\["node_modules\/node-llama-cpp"\]\.version/, "the CUDA binary's version is read from the lockfile's node-llama-cpp");
    assert.match(cuda, /@node-llama-cpp\/linux-x64-cuda@/, "the deps-cuda stage installs @node-llama-cpp/linux-x64-cuda");
    assert.equal(lockfile.packages["node_modules/@node-llama-cpp/linux-x64-cuda"]?.version, llama, "the lockfile's CUDA binary matches node-llama-cpp's version");
  });

  for (const target of targets) {
    describe(target, () => {
      test("runs as non-root user 10001", () => {
        assert.equal(only(target, "USER").text, "10001:10001", `${target} switches to 10001:10001`);
        const creates = instructionsOf(dockerfile, target, "RUN").some((instruction) => /useradd\b.*--uid 10001\b/.test(instruction.text));
        assert.ok(creates, `${target} creates user 10001, so tools that look the user up find a name and home`);
      });

      test("starts the spillway bin from /app", () => {
        assert.deepEqual(execForm(only(target, "ENTRYPOINT")), ["spillway"], `${target}'s entry point is spillway`);
        assert.equal(only(target, "WORKDIR").text, "/app", `${target} works in /app, where npx finds node-llama-cpp`);
        const bin = packageJson.bin["spillway"]!.replace(/^\.\//, "");
        const link = instructionsOf(dockerfile, target, "RUN").some((instruction) => instruction.text.includes(`ln -s /app/${bin} /usr/local/bin/spillway`));
        assert.ok(link, `${target} links /usr/local/bin/spillway to /app/${bin}`);
        assert.ok((statSync(path.join(root, bin)).mode & 0o111) !== 0, `${bin} is executable, so the link runs it`);
        const copiesApp = instructionsOf(dockerfile, target, "COPY").some((instruction) => parseCopy(instruction).from === "sources");
        assert.ok(copiesApp, `${target} copies the sources stage`);
      });

      test("default command parses", () => {
        const command = execForm(only(target, "CMD"));
        const main = read("cli/main.ts");
        assert.ok(main.includes(`${JSON.stringify(command[0])}: {`) || main.includes(`  ${command[0]}: {`), `${command[0]} is a spillway command`);
        if (target === "controller") {
          const source = read("cli/commands/controller.ts");
          for (const flag of command.slice(1).filter((word) => word.startsWith("--"))) {
            assert.ok(source.includes(`"${flag.slice(2)}": {`) || source.includes(` ${flag.slice(2)}: {`), `spillway controller accepts ${flag}`);
          }
          return;
        }
        const options = parseWorkerOptions(command.slice(1));
        assert.ok(options !== undefined, `${target}'s CMD is valid spillway worker options`);
        assert.equal(options.host, "0.0.0.0", `${target}'s worker listens on every interface of the container`);
        assert.equal(options.port, exposedPort(target), `${target}'s worker listens on the exposed port`);
        assert.equal(options.gpu, target === "worker-cuda" ? "cuda" : false, `${target}'s worker uses its own backend`);
      });

      test("exposes the code's default port", () => {
        const expected = target === "controller"
          ? configSchema.shape.gateway.parse(undefined).port
          : parseWorkerOptions(["--model", "/models/model.gguf"])!.port;
        assert.equal(exposedPort(target), expected, `${target} exposes the port its process listens on by default`);
      });

      test("healthcheck requests a served path", () => {
        const healthcheck = only(target, "HEALTHCHECK");
        const command = execForm(healthcheck);
        assert.equal(command[0], "node", `${target}'s HEALTHCHECK uses node, which every image has`);
        const url = /http:\/\/127\.0\.0\.1:(\d+)(\/[\w/-]*)/.exec(command.join(" "));
        assert.ok(url !== null, `${target}'s HEALTHCHECK requests a loopback URL`);
        assert.equal(Number(url[1]), exposedPort(target), `${target}'s HEALTHCHECK requests the exposed port`);
        const server = read(serverFiles[target]);
        assert.ok(server.includes(`app.get("${url[2]}"`), `${serverFiles[target]} serves GET ${url[2]}`);
        assert.match(healthcheck.text, /--start-period=\d+s/, `${target}'s HEALTHCHECK leaves time to start`);
      });

      test("labels carry the version and licence", () => {
        const labels = new Map(instructionsOf(dockerfile, target, "LABEL").flatMap((instruction) => [...parseLabels(instruction)]));
        assert.equal(dockerfile.globalArgs.get("VERSION"), packageJson.version, "the VERSION build argument defaults to package.json's version");
        assert.equal(labels.get("org.opencontainers.image.version"), "${VERSION}", `${target} is labelled with VERSION`);
        assert.equal(labels.get("org.opencontainers.image.licenses"), packageJson.license, `${target} is labelled with package.json's licence`);
        assert.equal(labels.get("org.opencontainers.image.title"), `spillway-${target}`, `${target} is titled spillway-${target}`);
        const chain = stageChain(dockerfile, target).map((stage) => stage.name);
        assert.ok(chain.includes(target), `${target}'s stage chain ends in ${target}`);
      });
    });
  }
});
