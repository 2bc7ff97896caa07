// When and how long to wait before sending a call again (always the same
// request, same request id, so Tally counts it once).
import { BinaryReader } from "@bufbuild/protobuf/wire";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeToString } from "@connectrpc/connect/protocol-connect";
export const retryDefaults = { attemptsMax: 10, totalMs: 30_000, baseDelayMs: 100, maxDelayMs: 2_000, callTimeoutMs: 5_000 };
export function retryOptions(partial = {}) {
    const r = { ...retryDefaults, ...partial };
    if (!(r.attemptsMax >= 1) || !(r.totalMs > 0) || !(r.baseDelayMs > 0) || !(r.maxDelayMs >= r.baseDelayMs) || !(r.callTimeoutMs > 0)) {
        throw new RangeError("retry: attemptsMax >= 1, totalMs, baseDelayMs, callTimeoutMs > 0 and maxDelayMs >= baseDelayMs");
    }
    return r;
}
export function backoffMs(retry, attempt) {
    const ceiling = Math.min(retry.maxDelayMs, retry.baseDelayMs * 2 ** Math.min(attempt, 30));
    return ceiling / 2 + Math.random() * (ceiling / 2);
}
const transportCodes = /^(E[A-Z]+|ERR_HTTP2_\w+|ERR_STREAM_\w+|ERR_SOCKET_\w+)$/;
function fromTransport(error) {
    const seen = new Set();
    for (let e = error; e instanceof Error && !seen.has(e); e = e.cause) {
        seen.add(e);
        const code = e.code;
        if (typeof code === "string" && transportCodes.test(code))
            return true;
    }
    return false;
}
export function failureOf(error) {
    const ce = ConnectError.from(error);
    const code = fromTransport(ce.cause) || ce.code === Code.Canceled ? "UNAVAILABLE" : codeToString(ce.code).toUpperCase();
    return { code, message: ce.rawMessage, retryInfoMs: retryInfoMs(ce) };
}
/** The delay of a google.rpc.RetryInfo detail, or undefined. */
export function retryInfoMs(error) {
    for (const detail of error.details) {
        if (!("type" in detail) || detail.type !== "google.rpc.RetryInfo")
            continue;
        try {
            const outer = new BinaryReader(detail.value);
            let seconds = 0;
            let nanos = 0;
            while (outer.pos < outer.len) {
                const [field, wireType] = outer.tag();
                if (field !== 1) {
                    outer.skip(wireType);
                    continue;
                }
                const duration = new BinaryReader(outer.bytes());
                while (duration.pos < duration.len) {
                    const [f, w] = duration.tag();
                    if (f === 1)
                        seconds = Number(duration.int64());
                    else if (f === 2)
                        nanos = duration.int32();
                    else
                        duration.skip(w);
                }
            }
            return seconds * 1000 + nanos / 1e6;
        }
        catch {
            return undefined;
        }
    }
    return undefined;
}
const retryableCodes = new Set(["UNAVAILABLE", "DEADLINE_EXCEEDED"]);
/** Whether Tally could not decide (the failure policy and the outbox apply). */
export function isRetryable(failure) {
    return retryableCodes.has(failure.code) || (failure.code === "RESOURCE_EXHAUSTED" && failure.retryInfoMs !== undefined);
}
/** How long to wait before retrying, or undefined when it must not be retried. */
export function delayMs(retry, failure, attempt) {
    if (retryableCodes.has(failure.code))
        return backoffMs(retry, attempt);
    if (failure.code === "RESOURCE_EXHAUSTED" && failure.retryInfoMs !== undefined)
        return failure.retryInfoMs + Math.random() * retry.baseDelayMs;
    return undefined;
}
