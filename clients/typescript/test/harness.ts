/**
 * Runs the real `testbed` binary for the tests: TESTBED_BIN (default
 * target/debug/testbed), bound to 127.0.0.1:0, its port read from
 * --addr-file, ready once grpc.health.v1 answers SERVING (polled, never a
 * fixed sleep; on the plaintext --probe-addr when the server has one).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, openSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import * as grpc from "@grpc/grpc-js";

const ROOT = resolve(__dirname, "../../../..");
const BIN = process.env.TESTBED_BIN ? resolve(ROOT, process.env.TESTBED_BIN) : join(ROOT, "target/debug/testbed");

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** grpc.health.v1.Health/Check for `service`; true when SERVING. The
 * messages are one string field and one enum field, encoded by hand so the
 * tests need no health package. */
function healthy(addr: string): Promise<boolean> {
  const client = new grpc.Client(addr, grpc.credentials.createInsecure());
  return new Promise((done) => {
    client.makeUnaryRequest(
      "/grpc.health.v1.Health/Check",
      () => Buffer.alloc(0), // service "" = the whole process
      (bytes: Buffer) => bytes,
      {},
      new grpc.Metadata(),
      { deadline: Date.now() + 1000 },
      (err, reply) => {
        client.close();
        done(!err && reply !== undefined && reply.equals(Buffer.from([0x08, 0x01]))); // status = SERVING (1)
      },
    );
  });
}

/** A running `testbed` process. */
export class Testbed {
  private constructor(
    private readonly proc: ChildProcess,
    private readonly dir: string,
    readonly addr: string,
  ) {}

  /** Starts `testbed <args>` and waits until it is SERVING. */
  static async start(...args: string[]): Promise<Testbed> {
    const dir = mkdtempSync(join(tmpdir(), "testbed-ts-"));
    const addrFile = join(dir, "addr.json");
    const log = openSync(join(dir, "testbed.log"), "w");
    const proc = spawn(BIN, [...args, "--grpc-addr", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0",
      "--addr-file", addrFile, "--shutdown-grace", "5s"], { stdio: ["ignore", log, log] });
    const deadline = Date.now() + 30_000;
    while (!existsSync(addrFile)) {
      if (proc.exitCode !== null) throw new Error(`testbed exited early: ${readFileSync(join(dir, "testbed.log"))}`);
      if (Date.now() > deadline) throw new Error("testbed did not bind within 30 s");
      await pause(20);
    }
    const addrs = JSON.parse(readFileSync(addrFile, "utf8"));
    const addr = addrs.grpc as string;
    // A TLS server answers plaintext health only on its --probe-addr.
    const probe = (addrs.probe as string | undefined) ?? addr;
    while (!(await healthy(probe))) {
      if (Date.now() > deadline) throw new Error(`testbed not SERVING: ${readFileSync(join(dir, "testbed.log"))}`);
      await pause(20);
    }
    return new Testbed(proc, dir, addr);
  }

  /** SIGTERM, then the exit code. */
  async stop(): Promise<number | null> {
    const exited = new Promise<number | null>((r) => this.proc.once("exit", (code) => r(code)));
    if (this.proc.exitCode === null) this.proc.kill("SIGTERM");
    const code = this.proc.exitCode ?? (await exited);
    rmSync(this.dir, { recursive: true, force: true });
    return code;
  }
}
