import { readFileSync } from "node:fs";

import type { BenchChild } from "./gateway-processes.ts";

/** CPU time used so far, in microseconds: by each process of the benchmark and by the whole machine. */
export interface CpuReading {
  controller: number;
  upstream: number;
  /** The load generator and this process together. */
  client: number;
  /** Busy time of every CPU of the machine, or undefined where /proc/stat does not exist. */
  machine: number | undefined;
}

/** The CPU cost of one run, from the readings before and after it. */
export interface CpuCost {
  /** CPU time of the controller per successful request, in microseconds. */
  controllerPerRequest: number;
  upstreamPerRequest: number;
  /** Cores that other processes, kernel work charged to no process and hypervisor steal took during the run. */
  otherCores: number | undefined;
}

/** Linux reports /proc/stat in USER_HZ ticks, which are 1/100 s on x86 and arm64. */
const microsecondsPerTick = 10_000;

export async function readCpu(children: { controller: BenchChild; upstream: BenchChild; load: BenchChild }): Promise<CpuReading> {
  const [controller, upstream, load] = await Promise.all([children.controller.cpuUsage(), children.upstream.cpuUsage(), children.load.cpuUsage()]);
  return {
    controller: total(controller),
    upstream: total(upstream),
    client: total(load) + total(process.cpuUsage()),
    machine: readMachineBusy(),
  };
}

export function cpuCost(before: CpuReading, after: CpuReading, requests: number, elapsedSeconds: number): CpuCost {
  const controller = after.controller - before.controller;
  const upstream = after.upstream - before.upstream;
  const client = after.client - before.client;
  const machine = after.machine === undefined || before.machine === undefined ? undefined : after.machine - before.machine;
  return {
    controllerPerRequest: controller / Math.max(1, requests),
    upstreamPerRequest: upstream / Math.max(1, requests),
    otherCores: machine === undefined ? undefined : Math.max(0, machine - controller - upstream - client) / (elapsedSeconds * 1e6),
  };
}

function total(usage: NodeJS.CpuUsage): number {
  return usage.user + usage.system;
}

/** Sums the busy fields of /proc/stat's first line: everything but idle and iowait. */
function readMachineBusy(): number | undefined {
  let text: string;
  try {
    text = readFileSync("/proc/stat", "utf8");
  } catch {
    return undefined;
  }
  const fields = text.split("\n", 1)[0]?.trim().split(/\s+/).slice(1).map(Number) ?? [];
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = fields;
  return (user + nice + system + irq + softirq + steal) * microsecondsPerTick;
}
