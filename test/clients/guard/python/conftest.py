"""The Python side of the shared scenario list: a report written at the end of
the session for the harness (test/clients/guard/harness.ts) to check against
the ledger. TALLY_VARIANT picks the client: "asyncio" (AsyncTally) or "sync" (Tally)."""

from __future__ import annotations

import json
import os
from typing import Any, Dict, Iterator

import pytest

REPORT: Dict[str, Any] = {"language": f"python-{os.environ.get('TALLY_VARIANT', 'asyncio')}", "scenarios": {}}


@pytest.fixture(scope="session", autouse=True)
def write_report() -> Iterator[None]:
    yield
    with open(os.environ["TALLY_REPORT"], "w") as file:
        json.dump(REPORT, file, indent=1)
