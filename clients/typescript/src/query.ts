/** Reading statistics: a device's figures, and the pipeline's as a stream. */
import type { TestbedClient } from "./connect";
import type { Duration } from "./gen/google/protobuf/duration";
import {
  GetDeviceStatsRequest,
  type GetDeviceStatsResponse,
  type PipelineStats,
  WatchPipelineStatsRequest,
} from "./gen/testbed/v1/query";
import { call } from "./unary";

function duration(ms: number | undefined): Duration | undefined {
  return ms === undefined ? undefined : { seconds: Math.floor(ms / 1000), nanos: (ms % 1000) * 1e6 };
}

/** A device's labels, totals and per-minute series over `windowMs` (server
 * default 15 minutes); NOT_FOUND when no event of it is retained. */
export function deviceStats(client: TestbedClient, deviceId: string, windowMs?: number): Promise<GetDeviceStatsResponse> {
  return call(client.query.getDeviceStats.bind(client.query),
    GetDeviceStatsRequest.fromPartial({ deviceId, window: duration(windowMs) }));
}

/** The pipeline's figures, one at once and then one per `intervalMs`
 * (server default 1 s); leaving the `for await` loop cancels the call. */
export async function* watchPipelineStats(
  client: TestbedClient,
  opts: { intervalMs?: number; windowMs?: number } = {},
): AsyncGenerator<PipelineStats> {
  const stream = client.query.watchPipelineStats(
    WatchPipelineStatsRequest.fromPartial({ interval: duration(opts.intervalMs), window: duration(opts.windowMs) }));
  stream.on("error", () => {}); // the cancel below ends it with CANCELLED
  try {
    for await (const message of stream) {
      if (message.stats) yield message.stats;
    }
  } finally {
    stream.cancel();
  }
}
