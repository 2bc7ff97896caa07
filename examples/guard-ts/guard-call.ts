// One guarded LLM call with @tally/guard (clients/ts): README.md's TypeScript
// block, as written (test/clients/guard-typescript.test.ts checks they are the
// same and runs it). The model call is simulated. Against a local Tally
// (`npm start`), in a project with @tally/guard installed (see README.md):
//   node guard-call.ts
import { Tally } from "@tally/guard";

await using tally = new Tally({ url: "http://127.0.0.1:8080", apiKey: process.env.TALLY_API_KEY });
const call = await tally.guard({ project: "demo", estimateNanos: 2_000_000n, agent: "readme", ttlMs: 120_000 }, async (call) => {
  // const response = await openai.chat.completions.create(...); here its usage as the API returns it:
  const response = { model: "gpt-4o-mini", usage: { prompt_tokens: 1200, completion_tokens: 300 } };
  call.report(response, { costNanos: 1_234_567n }); // without costNanos Tally prices the tokens
  return call;
});
console.log(call.outcome, String(call.recorded?.projectCost?.totalCostNanos ?? "queued"));
