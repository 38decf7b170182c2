/**
 * A PublishStream publisher: batches go out on one bidi call, each `send`
 * resolves with that batch's acknowledgement (matched by sequence).
 */
import type { ClientDuplexStream, ServiceError } from "@grpc/grpc-js";

import type { TestbedClient } from "./connect";
import { type ErrorDetails, statusDetails } from "./errors";
import type { Event } from "./gen/testbed/v1/event";
import { PublishStreamRequest, type PublishStreamResponse } from "./gen/testbed/v1/ingest";

type Waiter = { resolve: (ack: PublishStreamResponse) => void; reject: (err: Error) => void };

/**
 * Batches in, acknowledgements out. With a `producerId`, sequences make the
 * producer idempotent: re-sending a batch under its sequence counts once.
 * Await the acks you send (the server reads at most its stream window of
 * batches ahead).
 */
export class StreamPublisher {
  private readonly call: ClientDuplexStream<PublishStreamRequest, PublishStreamResponse>;
  private readonly waiting = new Map<number, Waiter>();
  private nextSequence: number;
  private failure: Error | undefined;
  private readonly ended: Promise<void>;

  /** Opens the stream; sequences start at `firstSequence` (default 1). */
  constructor(client: TestbedClient, private readonly producerId = "", firstSequence = 1) {
    this.nextSequence = firstSequence;
    this.call = client.ingest.publishStream();
    this.call.on("data", (ack: PublishStreamResponse) => {
      this.waiting.get(ack.sequence)?.resolve(ack);
      this.waiting.delete(ack.sequence);
    });
    this.ended = new Promise((resolve) => {
      const fail = (err: Error) => {
        this.failure = err;
        for (const w of this.waiting.values()) w.reject(err);
        this.waiting.clear();
        resolve();
      };
      this.call.on("error", (err: ServiceError) => fail(err));
      this.call.on("end", () => fail(new Error("PublishStream ended")));
    });
  }

  /** Sends one batch; resolves with its acknowledgement (check
   * {@link ackError}), rejects if the stream fails first (re-send then). */
  send(events: Event[], traceContext: { [key: string]: string } = {}): Promise<PublishStreamResponse> {
    if (this.failure) return Promise.reject(this.failure);
    const sequence = this.nextSequence++;
    const ack = new Promise<PublishStreamResponse>((resolve, reject) => this.waiting.set(sequence, { resolve, reject }));
    this.call.write(PublishStreamRequest.fromPartial({ sequence, events, producerId: this.producerId, traceContext }));
    return ack;
  }

  /** Half-closes the stream and waits for the server to end it. */
  async close(): Promise<void> {
    this.call.end();
    await this.ended;
  }
}

/** Why a batch was refused as a whole, or undefined when it was processed. */
export function ackError(ack: PublishStreamResponse): ErrorDetails | undefined {
  return ack.status && ack.status.code !== 0 ? statusDetails(ack.status) : undefined;
}
