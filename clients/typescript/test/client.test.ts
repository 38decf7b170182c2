/**
 * The Node client against a live `testbed all`: unary publish with a
 * partial rejection, an envelope error's BadRequest decoded, a bidi
 * PublishStream with per-batch acknowledgements, device stats, a pipeline
 * watch, a bearer token, and mutual TLS.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type ServiceError, status } from "@grpc/grpc-js";

import * as tb from "../src";
import { Testbed } from "./harness";

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls GetDeviceStats until `count` events of the device are applied
 * (processing is asynchronous). */
async function waitDeviceEvents(client: tb.TestbedClient, deviceId: string, count: number) {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      const stats = await tb.deviceStats(client, deviceId);
      if ((stats.totals?.eventCount ?? 0) >= count) return stats;
    } catch (err) {
      if ((err as ServiceError).code !== status.NOT_FOUND) throw err;
    }
    if (Date.now() > deadline) throw new Error(`${deviceId}: ${count} events not processed within 15 s`);
    await pause(50);
  }
}

describe("testbed all", () => {
  let server: Testbed;
  let client: tb.TestbedClient;
  before(async () => {
    server = await Testbed.start("all");
    client = tb.connect(server.addr);
  });
  after(async () => {
    client.close();
    assert.equal(await server.stop(), 0);
  });

  test("a unary batch is accepted but for the invalid event, rejected by index and field", async () => {
    const reply = await tb.publish(client, [
      tb.metricEvent("ts-1", "ts-dev-1", "fan_speed", 10, "1", { labels: { arch: "arm64" } }),
      tb.metricEvent("ts-2", "ts-dev-1", "fan_speed", 20, "1"),
      tb.gpuEvent("ts-3", "ts-dev-1", { utilization: 2 }),
    ]);
    assert.equal(reply.acceptedCount, 2);
    assert.deepEqual(reply.rejections.map((r) => [r.index, r.eventId, r.field]), [[2, "ts-3", "events[2].gpu.utilization"]]);
    const stats = await waitDeviceEvents(client, "ts-dev-1", 2);
    assert.equal(stats.totals?.eventCount, 2);
    assert.deepEqual(stats.device?.labels, { arch: "arm64" });
    const fan = stats.totals?.metrics.find((m) => m.name === "fan_speed");
    assert.deepEqual([fan?.value?.count, fan?.value?.sum], [2, 30]);
  });

  test("an empty batch is INVALID_ARGUMENT with a BadRequest on `events`, not retried", async () => {
    const waits: number[] = [];
    const err = await tb.publish(client, [], { sleep: async (ms) => void waits.push(ms) }).then(
      () => assert.fail("an empty batch must fail"),
      (e: ServiceError) => e,
    );
    const details = tb.errorDetails(err);
    assert.equal(details.code, status.INVALID_ARGUMENT);
    assert.deepEqual(details.fieldViolations.map((v) => v.field), ["events"]);
    assert.deepEqual(waits, []);
  });

  test("PublishStream acknowledges each batch by sequence; a refused batch carries its status and the stream goes on", async () => {
    const publisher = new tb.StreamPublisher(client, "ts-producer-1");
    const acks = await Promise.all([
      publisher.send([tb.tokenEvent("ts-s-1", "ts-dev-s", { model: "llama-3-8b", tenant: "a", promptTokens: 5, completionTokens: 7 })]),
      publisher.send([]),
      publisher.send([tb.metricEvent("ts-s-2", "ts-dev-s", "x", 1), tb.metricEvent("ts-s-3", "", "x", 1)]),
    ]);
    assert.deepEqual(acks.map((a) => a.sequence), [1, 2, 3]);
    assert.deepEqual([acks[0].acceptedCount, tb.ackError(acks[0])], [1, undefined]);
    const refused = tb.ackError(acks[1]);
    assert.equal(refused?.code, status.INVALID_ARGUMENT);
    assert.deepEqual(refused?.fieldViolations.map((v) => v.field), ["events"]);
    assert.equal(acks[2].acceptedCount, 1);
    assert.deepEqual(acks[2].rejections.map((r) => r.field), ["events[1].device_id"]);
    // Re-sending sequence 1 of the same producer is a duplicate, counted once.
    const again = new tb.StreamPublisher(client, "ts-producer-1");
    const dup = await again.send([tb.tokenEvent("ts-s-1", "ts-dev-s", { model: "llama-3-8b", tenant: "a", promptTokens: 5, completionTokens: 7 })]);
    assert.deepEqual([dup.sequence, dup.acceptedCount, dup.duplicateCount], [1, 1, 1]);
    await Promise.all([publisher.close(), again.close()]);
    const stats = await waitDeviceEvents(client, "ts-dev-s", 2);
    assert.equal(stats.totals?.eventCount, 2);
  });

  test("WatchPipelineStats gives two messages 100 ms apart, then is cancelled", async () => {
    const times: Date[] = [];
    for await (const stats of tb.watchPipelineStats(client, { intervalMs: 100 })) {
      times.push(stats.time!);
      if (times.length === 2) break;
    }
    assert.equal(times.length, 2);
    assert.ok(times[1] > times[0], `${times[0].toISOString()} then ${times[1].toISOString()}`);
  });
});

test("a dns:/// target (resolved, round robin) publishes like a plain one", async () => {
  const server = await Testbed.start("all");
  try {
    const port = server.addr.split(":").pop();
    const client = tb.connect(`dns:///127.0.0.1:${port}`);
    const reply = await tb.publish(client, [tb.metricEvent("ts-dns-1", "ts-dev-dns", "x", 2.5)]);
    assert.equal(reply.acceptedCount, 1);
    assert.equal((await waitDeviceEvents(client, "ts-dev-dns", 1)).totals?.eventCount, 1);
    client.close();
  } finally {
    assert.equal(await server.stop(), 0);
  }
});

describe("testbed all with tokens", () => {
  const WRITE = "ts-client-write-secret-0001";
  let server: Testbed;
  before(async () => {
    server = await Testbed.start("all", "--auth-tokens", `writer:write:${WRITE}`);
  });
  after(async () => assert.equal(await server.stop(), 0));

  test("no token is UNAUTHENTICATED (ErrorInfo TOKEN_MISSING); the write token publishes", async () => {
    const event = tb.metricEvent("ts-auth-1", "ts-dev-auth", "x", 1);
    const anonymous = tb.connect(server.addr);
    const err = await tb.publish(anonymous, [event]).then(() => assert.fail("must be refused"), (e: ServiceError) => e);
    anonymous.close();
    const details = tb.errorDetails(err);
    assert.deepEqual([details.code, details.reason, details.domain], [status.UNAUTHENTICATED, "TOKEN_MISSING", "testbed"]);
    const writer = tb.connect(`http://${server.addr}`, { token: WRITE });
    const publisher = new tb.StreamPublisher(writer);
    assert.equal((await publisher.send([event])).acceptedCount, 1);
    await publisher.close();
    writer.close();
  });
});

/** A CA, a server certificate for localhost and a client certificate
 * (P-256), made by the openssl CLI as the interop suite makes them. */
function makePki(dir: string): Record<string, string> {
  const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
  const at = (name: string) => join(dir, name);
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl("req", "-x509", ...ec, "-keyout", at("ca.key"), "-out", at("ca.crt"), "-days", "2", "-subj", "/CN=ts-ca");
  for (const [name, san] of [["server", "DNS:localhost"], ["client", "DNS:ts-client"]]) {
    openssl("req", "-new", ...ec, "-keyout", at(`${name}.key`), "-out", at(`${name}.csr`), "-subj", `/CN=${name}`);
    writeFileSync(at(`${name}.ext`), `subjectAltName=${san}\n`);
    openssl("x509", "-req", "-in", at(`${name}.csr`), "-CA", at("ca.crt"), "-CAkey", at("ca.key"),
      "-CAcreateserial", "-out", at(`${name}.crt`), "-days", "2", "-extfile", at(`${name}.ext`));
  }
  return { ca: at("ca.crt"), cert: at("server.crt"), key: at("server.key"), clientCert: at("client.crt"), clientKey: at("client.key") };
}

test("mutual TLS: rootCerts + certChain/privateKey (+ serverName for an IP target) publish; without the client certificate UNAVAILABLE", async () => {
  const dir = mkdtempSync(join(tmpdir(), "testbed-ts-pki-"));
  const pki = makePki(dir);
  const server = await Testbed.start("all", "--tls-cert", pki.cert, "--tls-key", pki.key,
    "--tls-client-ca", pki.ca, "--probe-addr", "127.0.0.1:0");
  try {
    const url = `https://${server.addr}`;
    const rootCerts = readFileSync(pki.ca);
    // The certificate names localhost, the URL an address: serverName says what to verify.
    const serverName = "localhost";
    const client = tb.connect(url, { rootCerts, serverName, certChain: readFileSync(pki.clientCert), privateKey: readFileSync(pki.clientKey) });
    const reply = await tb.publish(client, [tb.metricEvent("ts-mtls-1", "ts-dev-mtls", "x", 1)]);
    assert.equal(reply.acceptedCount, 1);
    client.close();

    const anonymous = tb.connect(url, { rootCerts, serverName });
    const err = await tb.publish(anonymous, [tb.metricEvent("ts-mtls-2", "ts-dev-mtls", "x", 1)], { policy: { maxAttempts: 1 } })
      .then(() => assert.fail("served without a client certificate"), (e: ServiceError) => e);
    assert.equal(err.code, status.UNAVAILABLE, err.message);
    anonymous.close();

    assert.throws(() => tb.connect(url, { rootCerts, certChain: readFileSync(pki.clientCert) }), /go together/);
    assert.throws(() => tb.connect(`http://${server.addr}`, { rootCerts }), /plaintext target/);
  } finally {
    assert.equal(await server.stop(), 0);
    rmSync(dir, { recursive: true, force: true });
  }
});
