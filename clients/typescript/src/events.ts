/** Builders of `testbed.v1.Event` messages, one per payload kind. */
import { Event, GpuSample, TokenUsage } from "./gen/testbed/v1/event";

/** Fields every event has; `observedAt` defaults to now. */
export interface EventBase {
  labels?: { [key: string]: string };
  observedAt?: Date;
  runId?: string;
}

function base(eventId: string, deviceId: string, b: EventBase): Event {
  return Event.fromPartial({
    eventId,
    deviceId,
    observedAt: b.observedAt ?? new Date(),
    labels: b.labels ?? {},
    runId: b.runId ?? "",
  });
}

/** A generic metric event. */
export function metricEvent(eventId: string, deviceId: string, name: string, value: number, unit = "", b: EventBase = {}): Event {
  return { ...base(eventId, deviceId, b), metric: { name, value, unit } };
}

/** A GPU sample; `utilization` is a ratio within 0..1. */
export function gpuEvent(eventId: string, deviceId: string, gpu: Partial<GpuSample> & { utilization: number }, b: EventBase = {}): Event {
  return { ...base(eventId, deviceId, b), gpu: GpuSample.fromPartial(gpu) };
}

/** The token usage of one inference request. */
export function tokenEvent(eventId: string, deviceId: string, usage: Partial<TokenUsage> & { model: string; tenant: string }, b: EventBase = {}): Event {
  return { ...base(eventId, deviceId, b), tokens: TokenUsage.fromPartial(usage) };
}
