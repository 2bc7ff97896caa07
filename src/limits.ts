// Every limit Tally enforces, in one place, with the reason for each value.
// Units are in the names (Bytes, Ms, Count). Config may override some of them at
// start (see config.ts); these are the defaults and hard bounds. Nested
// budgets' limits are in ./limits-nesting.ts, exported from here too: import
// every limit from this module.
export * from "./limits-nesting.ts";

/** Identifiers (project_id, request_id, agent_id): long enough for a UUID,
 * a path-like "org/team/project" or a ULID with a prefix; short enough that an
 * index entry stays small and a log line stays readable. */
export const idLengthMax = 128;
/** The characters of an identifier: safe in URLs, file names, metric labels and
 * log lines without escaping. */
export const idPattern = /^[A-Za-z0-9._:/-]+$/;

/** Model labels carry vendor names like "anthropic/claude-sonnet-4@2025" or
 * "gpt-4o-mini+tools": printable ASCII without spaces, same length bound. */
export const modelLengthMax = 128;
export const modelPattern = /^[\x21-\x7e]+$/;

/** ISO 4217 currency codes are exactly three capital letters. */
export const currencyPattern = /^[A-Z]{3}$/;
export const currencyDefault = "USD";

/** A request body: the largest valid message (RecordCost with every string at its
 * maximum) is well under 1 KiB; 64 KiB leaves room for future fields while a
 * flood of huge bodies cannot pin memory. */
export const requestBytesMax = 64 * 1024;

/** Group commit: at most this many writes share one transaction. A batch of 256
 * small writes commits in about a millisecond on SQLite (measured, see
 * docs/decisions/0002-group-commit.md); larger batches add tail latency for the
 * first writer in the batch without raising throughput further. */
export const batchSizeMax = 256;
/** Writes waiting for a commit; beyond it, callers get RESOURCE_EXHAUSTED and
 * retry with the same request_id instead of waiting on an ever-growing queue.
 * At the 0.5-2k durable writes/s measured end to end on a shared 2-core machine
 * (bench/results.md) this is several seconds of backlog, not the "well under a
 * second" first assumed (see docs/decisions/0002-group-commit.md). */
export const queueDepthMax = 10_000;
/** The wait a full write queue advises (google.rpc.RetryInfo on its
 * RESOURCE_EXHAUSTED): at the 0.5-2k writes/s above, one second frees
 * 500-2000 slots, enough for the retrying writers to get in without a herd of
 * them finding the queue still full. */
export const queueFullRetryDelayMs = 1_000;

/** Idempotency keys (and the cost records that hold them) are never forgotten
 * before this: clients retry for minutes or hours, never a day. */
export const ledgerRetentionMsMin = 24 * 60 * 60 * 1000;
/** Retention sweeps delete at most this many records per transaction so a sweep
 * never holds the write lock for long. */
export const retentionSweepBatchMax = 1_000;
/** How often the retention sweeper runs (when retention is enabled). */
export const retentionSweepIntervalMs = 60 * 1000;

/** Graceful shutdown: in-flight calls get this long to finish before the
 * remaining connections are destroyed. Orchestrators usually allow 30 s between
 * SIGTERM and SIGKILL; 10 s leaves room for flushing and closing the database. */
export const shutdownDrainMsMax = 10_000;

/** Cleartext: a new connection must send its first bytes (the HTTP/2 client
 * preface, or an HTTP/1.1 request line) within this; until then nobody knows
 * which protocol it speaks and it serves nothing. A real client writes them
 * with the connect; 10 s covers a slow, lossy link. */
export const connectionSniffTimeoutMs = 10_000;
/** TLS: the handshake must complete within this (Node's default is 120 s, two
 * minutes of a socket that may never say a word). A handshake is two round
 * trips; 10 s covers a slow mobile link. */
export const tlsHandshakeTimeoutMs = 10_000;

/** HTTP/2 concurrent streams per connection: a client may multiplex many agents
 * over one connection, but not an unbounded number. */
export const http2StreamsPerConnectionMax = 1_000;

/** ListProjects: the page size when the client sends none, and the largest
 * page served (AIP-158: larger requests are served at this size). 1000 summaries
 * are about 150 KiB of JSON: one page stays a quick read and a small answer. */
export const listProjectsPageSizeDefault = 100;
export const listProjectsPageSizeMax = 1_000;
/** A page token is a small base64url cursor (order, spend, project id); anything
 * longer was not issued by us. */
export const pageTokenLengthMax = 512;

/** /metrics: per-project spend gauges carry a project label for the top N
 * spenders only, the rest is summed under project="other" (per currency), so a
 * fleet of a million projects still yields a bounded label set. 20 fits a
 * Grafana panel; at most 1000 keeps a scrape small. */
export const metricsTopProjectsDefault = 20;
export const metricsTopProjectsMax = 1_000;

/** The dashboard build held in memory: a Vite build of the page is a handful
 * of files and well under 1 MiB; anything far larger is not that build. */
export const dashboardFilesMax = 100;
export const dashboardBytesMax = 5 * 1024 * 1024;
// --- Security limits (see docs/security.md) ---------------------------------

/** Request headers (gRPC metadata) in bytes, names plus values. A real call
 * carries a few hundred bytes (content-type, user-agent, timeout, a 50-byte
 * bearer key, tracing headers); 8 KiB leaves room for proxies' additions while a
 * caller cannot make every request pin a large header block. Past it:
 * RESOURCE_EXHAUSTED. The transports' own hard limits (HTTP/2
 * maxHeaderListSize, HTTP/1.1 maxHeaderSize) sit at twice this, so anything
 * between the two gets the clear error and anything beyond is dropped by the
 * protocol layer before it is buffered. */
export const requestHeadersBytesMax = 8 * 1024;
export const transportHeadersBytesMax = 2 * requestHeadersBytesMax;
/** Header fields (metadata entries) per request: clients send 5 to 20. */
export const requestHeadersCountMax = 64;
export const transportHeadersCountMax = 2 * requestHeadersCountMax;

/** The whole request body must arrive within this: the largest valid body is
 * 64 KiB, which even a 10 KiB/s link delivers in under 7 s. A client that
 * starts a call and then stalls would otherwise hold a handler and its buffer
 * for as long as it keeps the connection open. Past it: DEADLINE_EXCEEDED and
 * the stream is closed. */
export const requestBodyReceiveMsMax = 30_000;

/** Calls in flight across all connections. Each holds a little memory and, for
 * writes, a queue slot; the write queue (queueDepthMax) already bounds writes,
 * this bounds reads and everything else. Past it: RESOURCE_EXHAUSTED at once,
 * rather than latency growing without bound. */
export const inFlightCallsMax = 20_000;
/** The wait advised with that refusal (google.rpc.RetryInfo): most calls
 * finish within milliseconds, so a tenth of a second frees many slots. */
export const inFlightRetryDelayMs = 100;

/** Open connections (TCP). Agents share connections (HTTP/2 multiplexes up to
 * http2StreamsPerConnectionMax calls each); 10k connections stay well under
 * the usual file-descriptor limits. At the limit a new connection evicts the
 * connection idle longest (no call in progress: a half-sent head, a silent TLS
 * handshake, an HTTP/2 session without streams), so idle sockets can never
 * lock new clients out; only when all 10k serve calls is the new one closed. */
export const connectionsMax = 10_000;

/** Streaming calls (server, client and bidi streams) stay open for minutes
 * to hours and each holds about 55 KiB (HTTP/2 stream, Connect's pipeline,
 * buffers: 20,000 Health/Watch streams took 1,076 MiB, issue 15). They are
 * counted as calls in flight and bounded per pool, globally and per connection.
 * Public streams (Health/Watch, server reflection) need no key, so anyone who
 * can connect can open them: 1,000 of them are at most ~55 MiB; a load
 * balancer watches one per service, grpcurl opens one per invocation. */
export const publicStreamsOpenMax = 1_000;
/** ...and 16 per connection: a client watching health of a few services, or
 * a reflection session, needs one to a handful. */
export const publicStreamsPerConnectionMax = 16;
/** Streams that need a key (WatchBudget): the event hub bounds WatchBudget
 * itself (watchSubscribersMax, per key watchSubscribersPerKeyMax) once the
 * caller is known; this bounds what reaches it, ~110 MiB at most. */
export const streamsOpenMax = 2_000;
/** ...and 256 per connection: a supervisor multiplexes the watches of its
 * fleet's projects over one HTTP/2 connection. */
export const streamsPerConnectionMax = 256;

/** HTTP/1.1: with no request in progress (new, or between keep-alive requests)
 * the next request head must be complete within this (slowloris: one byte at
 * a time never completes a head). A head is a few hundred bytes, sent in one
 * write by every client. */
export const http1HeadersTimeoutMs = 10_000;

/** HTTP/2: a session without an open stream for this long is closed (GOAWAY).
 * Agents call every few seconds and keep their session busy; an idle client
 * pays one reconnect (a round trip on a LAN) after a minute of silence. gRPC
 * clients reconnect on GOAWAY by themselves. A session that only sent the
 * preface and SETTINGS is idle from the start. */
export const http2SessionIdleMs = 60_000;
/** ...and once its GOAWAY is sent, the socket is destroyed if the peer has not
 * closed it within this: a well-behaved client closes at once. */
export const http2GoawayCloseMs = 1_000;
/** HTTP/1.1 keep-alive: an idle connection between requests is closed after
 * this. An agent's next call usually follows within seconds; Node's default. */
export const http1KeepAliveTimeoutMs = 5_000;

/** API keys (TALLY_ADMIN_KEYS, TALLY_KEYS_FILE). A plain key shorter than 32
 * characters cannot carry the ~190+ random bits that make a single SHA-256 a
 * safe way to store it; 256 bounds the work of hashing what a caller sends. */
export const apiKeyLengthMin = 32;
export const apiKeyLengthMax = 256;
/** Keys in one keys file, and the file's size: enough for a key per agent
 * fleet of a large organisation; the file is parsed on every reload. */
export const apiKeysMax = 10_000;
export const apiKeysFileBytesMax = 4 * 1024 * 1024;
/** Exact project ids plus prefixes one project key may list. */
export const keyProjectsMax = 1_000;
/** A key's rateLimitPerSecond: from 1 call/s to a million (above that the
 * limit would only cost a Map lookup for nothing: one process serves far less). */
export const keyRateLimitPerSecondMax = 1_000_000;
/** How often the keys file is checked for changes (stat polling survives the
 * rename-into-place and symlink swaps that editors and Kubernetes use). */
export const keysFileWatchIntervalMs = 2_000;

/** Labels on a cost record are the fixed fields agent_id and model (bounded
 * above); the contract has no free-form label map, so there is no label count
 * to bound. A future map field gets its count limit here. */

// --- Holds, windows, alerts, watchers (docs/decisions/0004-holds-and-windows.md)

/** A hold lives this long unless the caller asks otherwise: an LLM call with
 * retries finishes well within 5 minutes, and a hold abandoned by a crashed
 * agent blocks budget no longer than that. */
export const holdTtlMsDefault = 5 * 60 * 1000;
/** Shortest hold: anything shorter expires while the answer is on the wire. */
export const holdTtlMsMin = 1_000;
/** Longest hold: a day covers batch jobs; longer would let a forgotten hold
 * block budget across a whole daily window. */
export const holdTtlMsMax = 24 * 60 * 60 * 1000;
/** Active holds per project. 10k concurrent calls of one project is far beyond
 * any fleet we know; the bound keeps the holds table and a sweep small. Beyond
 * it, reserving is RESOURCE_EXHAUSTED until holds settle or expire. */
export const activeHoldsPerProjectMax = 10_000;
/** The hold sweeper deletes expired holds in transactions of at most this many
 * rows (each also decrements its project's reserved total), like retention. */
export const holdSweepBatchMax = 1_000;
/** A reservation's idempotency key (CheckBudget request_id) is kept this long
 * after its hold's expiry, so a retry that arrives after the hold ended is told
 * so instead of placing a second hold. An hour outlasts any client's retry loop
 * and any proxy's queue; longer would only grow the table (one small row per
 * keyed reservation). A retry later than this is a new reservation. */
export const reserveKeyKeepMs = 60 * 60 * 1000;
/** How often expired holds are swept. Expired holds stop counting at once
 * (checked in every decision); the sweep only reclaims rows. */
export const holdSweepIntervalMs = 10 * 1000;

/** Time zones: IANA names ("America/Argentina/ComodRivadavia" is 32 long). */
export const timeZoneLengthMax = 64;
export const timeZonePattern = /^[A-Za-z][A-Za-z0-9_+\-/]*$/;
export const timeZoneDefault = "UTC";
/** Cached Intl formatters, one per time zone in use; cleared when full. */
export const timeZoneFormatterCacheMax = 1_000;

/** Alert thresholds per budget, in basis points of a limit (10000 = 100 %). */
export const alertThresholdsMax = 10;
export const alertThresholdBpsMax = 10_000;

/** Breakdown entries returned per dimension (highest cost first): enough for
 * any dashboard, bounded even if a client invents a label per call. */
export const breakdownEntriesMax = 1_000;

/** ListCostRecords pages (AIP-158): default and maximum page size. A record
 * is under 400 bytes of JSON, so a full page stays well under 1 MiB. */
export const listCostRecordsPageSizeDefault = 100;
export const listCostRecordsPageSizeMax = 1_000;
/** The longest ListCostRecords page token we accept (ours are under 350
 * characters: base64url of project id, time range and position). */
export const costRecordPageTokenLengthMax = 512;

/** WatchBudget: events queued per subscriber before it counts as fallen behind
 * and is ended with RESOURCE_EXHAUSTED (it resubscribes and gets a fresh
 * snapshot). Publishing is a push onto this queue, so a slow watcher never
 * slows a write. */
export const watchQueueDepthMax = 256;
/** Concurrent WatchBudget streams per server; more are RESOURCE_EXHAUSTED. */
export const watchSubscribersMax = 1_000;
/** ...of which one API key may hold at most a quarter: a tenant watching
 * every project of a large fleet fits, and four tenants at their maximum still
 * leave the rest their streams. More are RESOURCE_EXHAUSTED for that key only. */
export const watchSubscribersPerKeyMax = 250;

/** PostgreSQL connections per replica. A replica commits one write batch at a
 * time (one connection) and serves reads on the others; 10 covers a busy
 * replica, and 10 x a handful of replicas stays well under PostgreSQL's default
 * max_connections of 100. */
export const postgresPoolSizeDefault = 10;
/** No statement (a batch's statements, a read, a lock wait) may run longer: a
 * stuck database then answers UNAVAILABLE in bounded time instead of holding
 * callers and locks. A 256-write batch takes well under a second even on a
 * loaded 2-core machine (decision 0005); 5 s is far above. */
export const postgresStatementTimeoutMsDefault = 5_000;
/** One attempt to open a connection; then the caller hears UNAVAILABLE. */
export const postgresConnectTimeoutMsDefault = 5_000;
/** At start, how long a replica keeps retrying to reach PostgreSQL before it
 * gives up (databases often start after the services that use them). */
export const postgresConnectRetryMsDefault = 60_000;
/** Backoff between those attempts: doubling from min to max. */
export const postgresConnectBackoffMsMin = 100;
export const postgresConnectBackoffMsMax = 5_000;
/** A batch that fails as a whole on a transient error (serialization failure,
 * deadlock, a pooled connection that died before COMMIT was sent) is retried at
 * most this many times in total before its writes get UNAVAILABLE. */
export const postgresBatchAttemptsMax = 3;
/** Catalog lookups sent in one PostgreSQL statement (src/store/postgres/
 * price-lookups.ts): a turn of the event loop rarely parses more RecordCosts
 * than a batch holds (256); past this the lookups go as several statements at
 * once, so one statement's arrays and plan stay small. */
export const priceLookupsPerStatementMax = 256;
/** At start, a replica waits at most this long for another replica that holds
 * the migration lock (applying migrations takes well under a second). */
export const postgresMigrationLockWaitMsMax = 120_000;
/** Requests on one server-reflection stream. grpcurl and buf curl send a few per
 * invocation (list, then a file per symbol); a stream that asks for more is
 * not a debugging tool, and a new stream costs nothing. */
export const reflectionRequestsPerStreamMax = 1_000;

/** SQLite's page cache per connection. The default (2 MiB) holds a few
 * thousand pages: with a million projects, random lookups miss it and re-read
 * index and table pages, which made GetProjectCost/CheckBudget at 1M projects
 * ~1.45x slower than on an empty database at concurrency 16 (bench:scale).
 * 64 MiB holds the hot part of the totals, budgets and their indexes
 * (bench:scale, c=16, big/empty p50: 1.47/1.43 before, 1.24/1.26 with this and
 * mmap below; noisy 2-round runs on a shared VM). */
export const sqliteCacheBytes = 64 * 1024 * 1024;
/** Memory-mapped reads of the database file (SQLite mmap_size): pages are read
 * from the OS page cache without a read() syscall and copy per page. Address
 * space; the pages touched count in RSS as file-backed (reclaimable) memory:
 * bench:scale showed 642 MiB after load at 1M projects instead of 369 MiB. */
export const sqliteMmapBytes = 256 * 1024 * 1024;
/** How long the SQLite writer thread may take to start and open the database
 * (src/store/sqlite/writer.ts). It loads a few modules and opens one file:
 * well under a second; longer means something is wrong, and start-up fails. */
export const sqliteWriterStartMsMax = 30_000;
/** Projects whose last read state (budget, totals) the SQLite store keeps in
 * memory for reads (src/store/sqlite/state.ts, SqliteStateCache): a read of a project
 * not written since costs a Map lookup instead of a SQLite statement (~15 µs
 * under load). A fleet's hot projects fit; entries are about 2 KiB, so this
 * bounds the cache near 20 MiB. */
export const sqliteStateCacheEntriesMax = 10_000;

/** Log lines are joined and written together at most this long after the first
 * of them (src/log.ts): one write per window instead of one per RPC. Short
 * enough that nobody watching the log notices, long enough that under load a
 * write carries tens to hundreds of lines. */
export const logCoalesceMs = 10;
/** ...or as soon as this many characters are waiting: bounds the memory held
 * and the size of one write whatever the log rate. */
export const logCoalesceCharsMax = 64 * 1024;

/** DeleteProject removes a project's cost records in the writer's one
 * transaction, which holds up every other write while it runs: 100,000
 * records is well under a second on SQLite and PostgreSQL. A larger project is
 * refused (FAILED_PRECONDITION) and can be archived instead. */
export const deleteProjectRecordsMax = 100_000;

/** A price entry's source: a pricing page URL with a note ("as tabulated at
 * ...") or a contract reference fits in 512 characters; longer text belongs in
 * a document the source points to. */
export const priceSourceLengthMax = 512;
/** ListModelPrices pages: the catalog is a few hundred entries for a few
 * dozen models with their history; 100 per page by default, 1000 at most,
 * like the other listings. */
export const modelPricesPageSizeDefault = 100;
export const modelPricesPageSizeMax = 1_000;
/** CheckBudget candidate_models: an agent chooses among a handful of models;
 * each candidate costs one catalog lookup, so the list is bounded. */
export const candidateModelsMax = 16;
/** RecordCost occurred_at may lie this far in the future (clocks of agents
 * and server disagree by seconds, not minutes). */
export const occurredAtFutureMsMax = 5 * 60 * 1000;
/** ... and this far in the past: a record is priced at its call's time, and a
 * client retries for minutes or hours, never a day (ledgerRetentionMsMin). */
export const occurredAtPastMsMax = 24 * 60 * 60 * 1000;

/** The commit counter kept in a SQLite database's header (PRAGMA user_version,
 * a signed 32-bit field) counts modulo 2^31 and is compared modulo it: at a
 * thousand write transactions a second it wraps after 24 days, and the log
 * beside the database trails it by at most one transaction. */
export const commitCounterModulo = 2 ** 31;

/** Operator commands (check, migrate-data) give a database this long to accept
 * a connection: they run by hand or in a deploy job, where failing with a
 * clear line beats waiting for minutes. */
export const opsConnectTimeoutMs = 10_000;
/** `tally migrate-data` prepares its target with Tally's own migrations under
 * this statement timeout (not the server's per-call one). On the empty target
 * they take well under a second; the bound is for a statement waiting on a lock
 * another session holds (a replica migrating the same database): generous,
 * since a deploy job would rather wait than stop half way, yet it still ends. */
export const opsMigrateStatementTimeoutMs = 600_000;

/** SQLite: how long a statement waits on a lock another connection holds
 * (the writer thread and the readers of one process, a `tally backup` beside
 * the server) before SQLITE_BUSY. Write transactions last milliseconds; 5 s
 * rides out a checkpoint or a backup step, and still fails fast enough that an
 * RPC's caller sees UNAVAILABLE rather than a hang. */
export const sqliteBusyTimeoutMs = 5_000;

/** PostgreSQL: a pooled connection idle this long is closed. Long enough that
 * steady traffic never reconnects (each connection costs a backend process and
 * a TLS/auth handshake), short enough that a replica after a burst gives its
 * backends back to a server shared by several replicas. */
export const postgresPoolIdleTimeoutMs = 30_000;

/** migrate-data copies rows in chunks of this many: one INSERT ... unnest per
 * chunk, so one round trip per 5,000 rows, while a chunk of the widest table
 * (cost_records, 20 columns) stays a few MB of parameters. */
export const migrateChunkRows = 5_000;
/** How often migrate-data prints a progress line when stderr is not a terminal. */
export const migrateProgressEveryMs = 5_000;
