/**
 * Rich error details (`google.rpc`) of a failed call, read from its
 * `grpc-status-details-bin` trailer, or of a batch refused on a
 * PublishStream (its response's `status`): one decoder for both.
 */
import type { Metadata, ServiceError } from "@grpc/grpc-js";

import { BadRequest, ErrorInfo, PreconditionFailure, RetryInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";
import type { Any } from "./gen/google/protobuf/any";

/** One `google.rpc.BadRequest` field violation. */
export interface FieldViolation {
  field: string;
  description: string;
}

/** The code, message and decoded details of an error. */
export interface ErrorDetails {
  /** The gRPC status code (grpc-js `status` numbers). */
  code: number;
  message: string;
  fieldViolations: FieldViolation[];
  /** The `RetryInfo` delay in milliseconds, when the server sent one. */
  retryDelayMs?: number;
  /** From an `ErrorInfo`. */
  reason?: string;
  domain?: string;
  metadata: { [key: string]: string };
  /** The violation types of a `PreconditionFailure`. */
  preconditionTypes: string[];
  /** Details of other types, undecoded. */
  other: Any[];
}

const PREFIX = "type.googleapis.com/";

/** Decodes a `google.rpc.Status` message. */
export function statusDetails(status: Status): ErrorDetails {
  const out: ErrorDetails = {
    code: status.code,
    message: status.message,
    fieldViolations: [],
    metadata: {},
    preconditionTypes: [],
    other: [],
  };
  for (const detail of status.details) {
    switch (detail.typeUrl) {
      case PREFIX + "google.rpc.BadRequest":
        for (const v of BadRequest.decode(detail.value).fieldViolations) {
          out.fieldViolations.push({ field: v.field, description: v.description });
        }
        break;
      case PREFIX + "google.rpc.RetryInfo": {
        const delay = RetryInfo.decode(detail.value).retryDelay;
        out.retryDelayMs = delay ? delay.seconds * 1000 + delay.nanos / 1e6 : 0;
        break;
      }
      case PREFIX + "google.rpc.ErrorInfo": {
        const info = ErrorInfo.decode(detail.value);
        out.reason = info.reason;
        out.domain = info.domain;
        out.metadata = info.metadata;
        break;
      }
      case PREFIX + "google.rpc.PreconditionFailure":
        out.preconditionTypes.push(...PreconditionFailure.decode(detail.value).violations.map((v) => v.type));
        break;
      default:
        out.other.push(detail);
    }
  }
  return out;
}

/** Decodes a failed call's error; without a details trailer only the code
 * and message are set. */
export function errorDetails(err: ServiceError): ErrorDetails {
  const raw = (err.metadata as Metadata | undefined)?.get("grpc-status-details-bin")[0];
  const decoded = raw instanceof Buffer ? statusDetails(Status.decode(raw)) : statusDetails(Status.fromPartial({}));
  // The call's code and message are authoritative (the trailer repeats them).
  return { ...decoded, code: err.code, message: err.details };
}
