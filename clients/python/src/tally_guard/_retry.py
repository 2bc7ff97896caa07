"""When and how long to wait before sending a call again (always with the same
request id, so Tally counts it once)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence, Tuple, Union

# Codes worth retrying: Tally did not decide. RESOURCE_EXHAUSTED only when the
# server says how long to wait (google.rpc.RetryInfo): without it the limit
# will not pass by waiting (too many holds, a message too large).
RETRYABLE_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"

Metadata = Sequence[Tuple[str, Union[str, bytes]]]


@dataclass(frozen=True)
class Retry:
    """Bounded retries with exponential backoff and jitter.

    attempts_max: sends per call, the first included. total_s: no new attempt
    starts after this long since the first. Backoff before attempt n+1 is
    uniform in [d/2, d] with d = min(max_delay_s, base_delay_s * 2**n) (half
    jitter: spread out, never a burst of immediate retries). A
    RESOURCE_EXHAUSTED waits the server's retry delay plus up to base_delay_s
    of jitter. call_timeout_s bounds each attempt (DEADLINE_EXCEEDED is retried).
    """

    attempts_max: int = 10
    total_s: float = 30.0
    base_delay_s: float = 0.1
    max_delay_s: float = 2.0
    call_timeout_s: float = 5.0

    def __post_init__(self) -> None:
        if self.attempts_max < 1:
            raise ValueError("attempts_max must be >= 1")
        if self.total_s <= 0 or self.base_delay_s <= 0 or self.max_delay_s < self.base_delay_s or self.call_timeout_s <= 0:
            raise ValueError("total_s, base_delay_s, call_timeout_s must be > 0 and max_delay_s >= base_delay_s")

    def backoff_s(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (0-based)."""
        ceiling = min(self.max_delay_s, self.base_delay_s * (2 ** min(attempt, 30)))
        return random.uniform(ceiling / 2, ceiling)

    def delay_s(self, code: str, retry_info_s: Optional[float], attempt: int) -> Optional[float]:
        """How long to wait before retrying a call that failed with `code`, or
        None when it must not be retried."""
        if code in RETRYABLE_CODES:
            return self.backoff_s(attempt)
        if code == "RESOURCE_EXHAUSTED" and retry_info_s is not None:
            return retry_info_s + random.uniform(0, self.base_delay_s)
        return None


def _varint(data: bytes, pos: int) -> Tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(data: bytes) -> Iterable[Tuple[int, int, Union[int, bytes]]]:
    """(field number, wire type, value) of a protobuf message: enough of the
    wire format to read google.rpc.Status without googleapis-common-protos."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(data, pos)
            yield field, wire_type, value
        elif wire_type == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated field")
            yield field, wire_type, data[pos : pos + length]
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported wire type {wire_type}")


def retry_info_s(trailing_metadata: Optional[Metadata]) -> Optional[float]:
    """The retry delay of a google.rpc.RetryInfo detail in the
    grpc-status-details-bin trailer (google.rpc.Status), or None."""
    for key, value in trailing_metadata or ():
        if key != "grpc-status-details-bin" or not isinstance(value, bytes):
            continue
        try:
            for field, _, any_bytes in _fields(value):
                if field != 3 or not isinstance(any_bytes, bytes):
                    continue
                type_url = b""
                payload = b""
                for f, _, v in _fields(any_bytes):
                    if f == 1 and isinstance(v, bytes):
                        type_url = v
                    elif f == 2 and isinstance(v, bytes):
                        payload = v
                if type_url.decode("utf-8", "replace") != RETRY_INFO_TYPE:
                    continue
                seconds = 0
                nanos = 0
                for f, _, v in _fields(payload):
                    if f == 1 and isinstance(v, bytes):
                        for df, _, dv in _fields(v):
                            if df == 1 and isinstance(dv, int):
                                seconds = dv
                            elif df == 2 and isinstance(dv, int):
                                nanos = dv
                return seconds + nanos / 1e9
        except ValueError:
            return None
    return None
