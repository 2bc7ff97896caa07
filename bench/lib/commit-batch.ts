// Times SqliteLedgerStore.commitBatch in-process for fixed batch sizes on a
// file with synchronous=FULL: the cost of one group commit, without the network.
import { initORM } from "../../src/store/orm.ts";
import type { WriteOp } from "../../src/ledger/store.ts";

export interface BatchTiming {
  size: number;
  medianMs: number;
}

export async function measureCommitBatch(path: string, sizes: number[], repetitions: number): Promise<BatchTiming[]> {
  const { store } = await initORM(`sqlite:${path}`, { synchronous: "FULL", busyTimeoutMs: 5_000 });
  const timings: BatchTiming[] = [];
  let key = 0;
  try {
    for (const size of sizes) {
      const samples: number[] = [];
      for (let r = 0; r < repetitions; r++) {
        const ops: WriteOp[] = Array.from({ length: size }, (_, i) => ({
          kind: "record",
          entry: {
            projectId: `gc-p${i % 64}`,
            requestId: `gc-${key++}`,
            costNanos: 1000n,
            inputTokens: 10n,
            outputTokens: 5n,
            agentId: "",
            model: "bench",
          },
        }));
        const t0 = performance.now();
        await store.commitBatch(ops, Date.now());
        samples.push(performance.now() - t0);
      }
      samples.sort((a, b) => a - b);
      timings.push({ size, medianMs: samples[Math.floor(samples.length / 2)] as number });
    }
  } finally {
    await store.close();
  }
  return timings;
}
