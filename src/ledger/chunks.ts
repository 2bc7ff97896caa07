// The shape every background deletion takes (retention, expired holds,
// reservation keys): bounded transactions, a bounded number of them per sweep.

/** Calls `deleteChunk(chunkMax)` until a chunk comes back short or `chunksMax`
 * chunks ran, so one sweep never holds the write path for long. Returns the
 * total deleted. */
export async function deleteInChunks(
  deleteChunk: (chunkMax: number) => Promise<number>,
  chunkMax: number,
  chunksMax: number,
): Promise<number> {
  let deleted = 0;
  for (let chunk = 0; chunk < chunksMax; chunk++) {
    const n = await deleteChunk(chunkMax);
    deleted += n;
    if (n < chunkMax) break;
  }
  return deleted;
}
