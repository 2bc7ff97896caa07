# One guarded LLM call with tally_guard (clients/python): README.md's Python
# block, as written (test/clients/guard-python.test.ts checks they are the same
# and runs it). The model call is simulated. Against a local Tally (`npm start`):
#   pip install ./gen/python ./clients/python && python3 examples/guard-python/guard_call.py
import os
from tally_guard import Tally

with Tally("http://127.0.0.1:8080", api_key=os.environ.get("TALLY_API_KEY")) as tally:
    with tally.guard("demo", estimate_nanos=2_000_000, agent="readme", ttl=120) as call:
        # response = openai.chat.completions.create(...); here its usage as the API returns it:
        response = {"model": "gpt-4o-mini", "usage": {"prompt_tokens": 1200, "completion_tokens": 300}}
        call.report(response, cost_nanos=1_234_567)  # without cost_nanos Tally prices the tokens
    print(call.outcome, call.recorded.project_cost.total_cost_nanos if call.recorded else "queued")
