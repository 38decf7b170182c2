/**
 * Connecting to a testbed: one channel shared by the three service clients,
 * and the interceptor that sends the bearer token.
 */
import * as grpc from "@grpc/grpc-js";

import { IngestServiceClient } from "./gen/testbed/v1/ingest";
import { QueryServiceClient } from "./gen/testbed/v1/query";
import { WorkerControlServiceClient } from "./gen/testbed/v1/worker";

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** Sent as `authorization: Bearer <token>` on every call. */
  token?: string;
  /** Overrides what the URL's scheme says (`https://` is TLS). */
  tls?: boolean;
  /** PEM roots replacing the system ones for TLS. */
  rootCerts?: Buffer;
  /** Extra grpc-js channel options. */
  channelOptions?: grpc.ChannelOptions;
}

/** The service clients on one channel; `close()` closes it. */
export interface TestbedClient {
  ingest: IngestServiceClient;
  query: QueryServiceClient;
  worker: WorkerControlServiceClient;
  close(): void;
}

/**
 * `http://h:p` and bare `h:p` are plaintext, `https://h:p` is TLS;
 * `dns:///h:p` resolves every address and spreads calls over them (round
 * robin, as the simulator does).
 */
export function parseTarget(url: string, tls?: boolean): { address: string; tls: boolean; options: grpc.ChannelOptions } {
  let address = url;
  let secure = false;
  const options: grpc.ChannelOptions = {};
  if (url.startsWith("https://")) {
    address = url.slice("https://".length);
    secure = true;
  } else if (url.startsWith("http://")) {
    address = url.slice("http://".length);
  } else if (url.startsWith("dns:")) {
    options["grpc.service_config"] = JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] });
  }
  return { address: address.replace(/\/+$/, ""), tls: tls ?? secure, options };
}

/** An interceptor adding the bearer token (call credentials would need TLS). */
function bearer(token: string): grpc.Interceptor {
  return (options, nextCall) =>
    new grpc.InterceptingCall(nextCall(options), {
      start(metadata, listener, next) {
        metadata.set("authorization", `Bearer ${token}`);
        next(metadata, listener);
      },
    });
}

/** Opens a channel to `url` and the ingest, query and worker clients on it. */
export function connect(url: string, opts: ConnectOptions = {}): TestbedClient {
  const target = parseTarget(url, opts.tls);
  const credentials = target.tls
    ? grpc.credentials.createSsl(opts.rootCerts ?? null)
    : grpc.credentials.createInsecure();
  const clientOptions: grpc.ClientOptions = {
    ...target.options,
    ...opts.channelOptions,
    interceptors: opts.token ? [bearer(opts.token)] : [],
  };
  const ingest = new IngestServiceClient(target.address, credentials, clientOptions);
  // The other clients reuse the first one's channel (one connection).
  const shared = { ...clientOptions, channelOverride: ingest.getChannel() };
  const query = new QueryServiceClient(target.address, credentials, shared);
  const worker = new WorkerControlServiceClient(target.address, credentials, shared);
  return { ingest, query, worker, close: () => ingest.close() };
}
