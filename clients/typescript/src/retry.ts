/**
 * Publishing one batch with retries that stay exact: UNAVAILABLE and
 * RESOURCE_EXHAUSTED are the codes the server documents as "nothing was
 * appended, retry"; every attempt sends the same request, so the server's
 * dedupe (producer id + sequence, else event ids) counts a batch once.
 */
import { type ServiceError, status } from "@grpc/grpc-js";

import { type ErrorDetails, errorDetails } from "./errors";
import type { TestbedClient } from "./connect";
import type { Event } from "./gen/testbed/v1/event";
import { PublishRequest, type PublishResponse } from "./gen/testbed/v1/ingest";
import { call } from "./unary";

/** How {@link publish} retries. */
export interface RetryPolicy {
  /** Attempts, the first call included (default 5). */
  maxAttempts: number;
  /** First backoff (default 100 ms), multiplied by `multiplier` (2) per
   * retry up to `maxBackoffMs` (5 s), spread by +/- `jitter` (0.2). */
  initialBackoffMs: number;
  maxBackoffMs: number;
  multiplier: number;
  jitter: number;
}

/** The defaults of {@link RetryPolicy}. */
export const DEFAULT_RETRY: RetryPolicy = {
  maxAttempts: 5,
  initialBackoffMs: 100,
  maxBackoffMs: 5_000,
  multiplier: 2,
  jitter: 0.2,
};

const RETRIED = new Set<number>([status.UNAVAILABLE, status.RESOURCE_EXHAUSTED]);

/** Milliseconds before the `retry`-th retry (1-based): the backoff, or the
 * server's RetryInfo delay when longer (a floor, never cut short). */
export function retryDelayMs(policy: RetryPolicy, retry: number, details: ErrorDetails): number {
  let backoff = Math.min(policy.maxBackoffMs, policy.initialBackoffMs * policy.multiplier ** (retry - 1));
  backoff *= 1 - policy.jitter + Math.random() * 2 * policy.jitter;
  return details.retryDelayMs !== undefined ? Math.max(details.retryDelayMs, backoff) : backoff;
}

/** Options of {@link publish}. */
export interface PublishOptions {
  producerId?: string;
  sequence?: number;
  policy?: Partial<RetryPolicy>;
  /** Bound of each attempt (default 10 s). */
  deadlineMs?: number;
  /** The wait between attempts (replaceable, e.g. to observe delays). */
  sleep?: (ms: number) => Promise<void>;
}

const sleepMs = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Publishes one batch, retrying per the policy. Resolves with the response
 * (its `rejections` are events refused on their own: fix, do not retry);
 * rejects with the last `ServiceError` when the batch is refused for a
 * reason not retried, or attempts run out.
 */
export async function publish(client: TestbedClient, events: Event[], opts: PublishOptions = {}): Promise<PublishResponse> {
  const policy = { ...DEFAULT_RETRY, ...opts.policy };
  const request = PublishRequest.fromPartial({ events, producerId: opts.producerId ?? "", sequence: opts.sequence ?? 0 });
  for (let attempt = 1; ; attempt++) {
    try {
      return await call(client.ingest.publish.bind(client.ingest), request, opts.deadlineMs);
    } catch (err) {
      const details = errorDetails(err as ServiceError);
      if (!RETRIED.has(details.code) || attempt >= policy.maxAttempts) throw err;
      await (opts.sleep ?? sleepMs)(retryDelayMs(policy, attempt, details));
    }
  }
}
