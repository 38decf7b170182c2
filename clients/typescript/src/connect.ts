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
  /** PEM roots replacing the system ones for TLS (the testbed's CA). */
  rootCerts?: Buffer;
  /** PEM client certificate chain, for mutual TLS (with `privateKey`). */
  certChain?: Buffer;
  /** PEM private key of `certChain`. */
  privateKey?: Buffer;
  /** The name to verify the server's certificate for, instead of the
   * URL's host (e.g. the Service's DNS name when dialling an IP). */
  serverName?: string;
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

/**
 * The channel credentials `opts` ask for: plaintext, or TLS verified
 * against `rootCerts` (the system roots without), with a client
 * certificate for mutual TLS. A certificate without its key (or the
 * reverse) is refused here rather than failing in the handshake.
 */
function channelCredentials(tls: boolean, opts: ConnectOptions): grpc.ChannelCredentials {
  if ((opts.certChain === undefined) !== (opts.privateKey === undefined)) {
    throw new Error("certChain and privateKey go together (mutual TLS needs both)");
  }
  if (!tls) {
    if (opts.certChain || opts.rootCerts || opts.serverName) {
      throw new Error("TLS options given for a plaintext target: use an https:// URL or tls: true");
    }
    return grpc.credentials.createInsecure();
  }
  return grpc.credentials.createSsl(opts.rootCerts ?? null, opts.privateKey ?? null, opts.certChain ?? null);
}

/** Opens a channel to `url` and the ingest, query and worker clients on it. */
export function connect(url: string, opts: ConnectOptions = {}): TestbedClient {
  const target = parseTarget(url, opts.tls);
  const credentials = channelCredentials(target.tls, opts);
  const clientOptions: grpc.ClientOptions = {
    ...(opts.serverName ? { "grpc.ssl_target_name_override": opts.serverName } : {}),
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
