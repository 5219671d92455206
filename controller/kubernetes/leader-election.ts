import type { CoordinationV1Api, V1Lease } from "@kubernetes/client-node";
import type { Logger } from "pino";

import { isConflict, isNotFound, wrapError } from "./api-errors.ts";

export interface LeaderElectionOptions {
  namespace: string;
  leaseName: string;
  identity: string;
  /** How long others wait, after the last renewal they saw, before taking the lease. */
  leaseDurationSeconds?: number;
  /** How long the leader keeps leading without a successful renewal before it steps down. */
  renewDeadlineSeconds?: number;
  /** Pause between attempts to acquire or renew. */
  retryPeriodSeconds?: number;
}

export interface LeadershipCallbacks {
  onStartedLeading: () => void;
  onStoppedLeading: () => void;
}

/**
 * Leader election through a coordination.k8s.io/v1 Lease, as client-go does it. Expiry is judged by
 * the local clock from when this candidate last saw the lease change, so clock skew between nodes does
 * not matter.
 */
export class LeaderElector {
  private leading = false;
  private lastRenewal = 0;
  private observed: { resourceVersion: string; at: number } | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private attempt: Promise<void> = Promise.resolve();
  private readonly leaseDurationMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryPeriodMs: number;

  constructor(
    private readonly coordination: CoordinationV1Api,
    private readonly options: LeaderElectionOptions,
    private readonly callbacks: LeadershipCallbacks,
    private readonly logger: Logger,
  ) {
    this.leaseDurationMs = (options.leaseDurationSeconds ?? 15) * 1000;
    this.renewDeadlineMs = (options.renewDeadlineSeconds ?? 10) * 1000;
    this.retryPeriodMs = (options.retryPeriodSeconds ?? 2) * 1000;
  }

  get isLeader(): boolean {
    return this.leading;
  }

  start(): void {
    this.schedule(0);
  }

  /** Stops campaigning and, when leading, releases the lease so another candidate takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.attempt;
    if (!this.leading) return;
    this.stepDown();
    try {
      await this.release();
    } catch (error) {
      this.logger.warn({ err: error }, "releasing the lease failed; others take over when it expires");
    }
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.attempt = this.tryAcquireOrRenew().finally(() => this.schedule(this.retryPeriodMs));
    }, delayMs);
  }

  private async tryAcquireOrRenew(): Promise<void> {
    // API calls have no timeout of their own. A leader's attempt may take only what is left of its renew
    // deadline, so a hanging call cannot keep it leading past that deadline.
    const timeoutMs = this.leading ? Math.max(0, this.lastRenewal + this.renewDeadlineMs - Date.now()) : this.renewDeadlineMs;
    try {
      const acquired = await withTimeout(this.acquireOrRenew(), timeoutMs);
      if (this.stopped) return;
      if (acquired) {
        this.lastRenewal = Date.now();
        if (!this.leading) {
          this.leading = true;
          this.logger.info({ identity: this.options.identity, lease: this.options.leaseName }, "became leader");
          this.callbacks.onStartedLeading();
        }
        return;
      }
      if (this.leading) this.stepDown();
    } catch (error) {
      this.logger.warn({ err: wrapError(`renewing lease ${this.options.leaseName}`, error) }, "lease attempt failed");
      if (this.leading && Date.now() - this.lastRenewal > this.renewDeadlineMs) this.stepDown();
    }
  }

  private stepDown(): void {
    this.leading = false;
    this.logger.warn({ identity: this.options.identity, lease: this.options.leaseName }, "stopped leading");
    this.callbacks.onStoppedLeading();
  }

  /** Returns whether this candidate holds the lease after the attempt. */
  private async acquireOrRenew(): Promise<boolean> {
    const { namespace, leaseName: name, identity } = this.options;
    const now = new Date();
    let lease: V1Lease;
    try {
      lease = await this.coordination.readNamespacedLease({ name, namespace });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      return this.write(() => this.coordination.createNamespacedLease({ namespace, body: { metadata: { name, namespace }, spec: this.holderSpec(now, now, 0) } }));
    }
    this.observe(lease);
    const holder = lease.spec?.holderIdentity ?? "";
    if (holder !== identity && holder !== "" && !this.expired(lease)) return false;
    const transitions = (lease.spec?.leaseTransitions ?? 0) + (holder === identity ? 0 : 1);
    const acquireTime = holder === identity ? (lease.spec?.acquireTime ?? now) : now;
    return this.write(() => this.coordination.replaceNamespacedLease({ name, namespace, body: { ...lease, spec: this.holderSpec(acquireTime, now, transitions) } }));
  }

  private holderSpec(acquireTime: Date, renewTime: Date, leaseTransitions: number): NonNullable<V1Lease["spec"]> {
    return { holderIdentity: this.options.identity, leaseDurationSeconds: this.leaseDurationMs / 1000, acquireTime, renewTime, leaseTransitions };
  }

  /** A conflict means another candidate wrote the lease first: not an error, only a lost round. */
  private async write(call: () => Promise<V1Lease>): Promise<boolean> {
    try {
      this.observe(await call());
      return true;
    } catch (error) {
      if (isConflict(error)) return false;
      throw error;
    }
  }

  private observe(lease: V1Lease): void {
    const resourceVersion = lease.metadata?.resourceVersion ?? "";
    if (this.observed?.resourceVersion !== resourceVersion) this.observed = { resourceVersion, at: Date.now() };
  }

  private expired(lease: V1Lease): boolean {
    const durationMs = (lease.spec?.leaseDurationSeconds ?? this.leaseDurationMs / 1000) * 1000;
    return this.observed === undefined || Date.now() > this.observed.at + durationMs;
  }

  private async release(): Promise<void> {
    const { namespace, leaseName: name, identity } = this.options;
    const lease = await this.coordination.readNamespacedLease({ name, namespace });
    if (lease.spec?.holderIdentity !== identity) return;
    await this.coordination.replaceNamespacedLease({ name, namespace, body: { ...lease, spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1 } } });
  }
}

/** Rejects when the call has not settled after `timeoutMs`; the call itself goes on in the background. */
async function withTimeout<Result>(call: Promise<Result>, timeoutMs: number): Promise<Result> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`the Lease API call timed out after ${timeoutMs} ms`)), timeoutMs);
  });
  try {
    return await Promise.race([call, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
