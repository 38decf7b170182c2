/** A promise over a grpc-js unary call. */
import { type CallOptions, Metadata, type ServiceError } from "@grpc/grpc-js";

/** The shape of every generated unary method (its full overload). */
export type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

/** Calls `method` (bound to its client) and resolves with the response or
 * rejects with the `ServiceError`; `deadlineMs` bounds the call. */
export function call<Req, Res>(method: UnaryMethod<Req, Res>, request: Req, deadlineMs = 10_000): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(request, new Metadata(), { deadline: Date.now() + deadlineMs }, (error, response) =>
      error ? reject(error) : resolve(response),
    );
  });
}
