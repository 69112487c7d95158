// Package ratelimit is keygate's limiter (SPEC §5): named rolling windows ("burst" 5 per 1s,
// "minute" 1000 per 1m, ...) and calendar quotas (per UTC day or month), checked together,
// all-or-nothing, in memory on one node or in Redis across a cluster.
//
// # One check
//
// A request's Check passes every limit that applies to it (the key's windows and quota, the
// consumer's shared ones) and a cost. Either every limit admits the cost and all of them consume
// it, or none consumes anything: a refused request never counts, anywhere. Cost 0 is a peek: it
// answers as cost 1 would, and consumes nothing. The Decision says which limit refused (of
// several, the one that frees last), how long until it admits the request (RetryAfter, for the
// Retry-After header), and for every limit its State: Remaining, Reset and Window, which are the
// "r", "t" and "w" of the RateLimit and RateLimit-Policy headers.
//
// # Windows: GCRA
//
// A window of limit L per period P is a GCRA (generic cell rate algorithm), the
// virtual-scheduling form of a token bucket of L tokens refilled continuously at L per P. Its only
// state is one timestamp, the theoretical arrival time TAT: the time at which the window would be
// whole again. With T = P/L (the emission interval) and TAT' = max(TAT, now) + cost×T, the
// request is admitted if TAT' - now <= P, and then TAT := TAT'. So:
//
//   - Remaining = floor((P - (TAT - now)) / T), the whole requests that fit now;
//   - Reset = TAT - now, the time until the window is whole again (0 when unused);
//   - RetryAfter = TAT' - P - now, the time until this cost fits (a cost above L never fits; it
//     is refused with RetryAfter = P).
//
// T is kept exact as q + r/L ns (P = q×L + r), so L×T is exactly P whatever L and P are; rounding
// T would lose up to one request per period for a client that sends its bursts on the period
// edges.
//
// Bounds (SPEC §5), for one window alone, over any run of D seconds against one key:
//
//   - at most L×(1 + D/P) requests are admitted: at most L at once (the bucket is full), plus at
//     most D/T = L×D/P refilled during the run;
//   - under demand that exceeds the window, a fresh window admits at least L×D/P of them (L at
//     once, then one every T), so at least 90% of L×D/P holds with room to spare. The refill
//     is continuous: nothing is lost at window edges, and there is no fixed-window "double
//     burst" at a boundary.
//
// One caveat holds for any limiter that keeps the upper bound: with L = 1 and requests that come
// slightly faster than one per P (say every 0.99×P), only every other one can be admitted, since
// two admitted requests less than P apart would exceed L×(1 + D/P) for D < P.
//
// # Quotas
//
// A quota is a counter per calendar UTC day or month: admitted if used + cost <= limit, then
// used += cost. Remaining = limit - used; Reset is the time to the end of the period, Window its
// length (28 to 31 days for a month); a refusal's RetryAfter is the end of the period. Quotas are
// exact under any concurrency: the memory limiter decides under the locks of every counter of
// the Check, the Redis limiter inside one Lua script, which Redis runs atomically.
//
// # In memory (NewMemory)
//
// Counters live in a map split into shards (64 by default), one mutex each. A Check locks the
// shards of its limits in index order (no deadlocks), decides, and unlocks; keys are placed by
// the part before their last ':' (the owner, as in "k:<id>:burst"), so the limits of one owner
// cost one lock. A Check with 3 windows and a quota takes about 250 ns plus one clock read, and
// allocates nothing. A sweeper goroutine, stopped by Close, drops counters that are as good as
// absent: windows whole again, quotas whose period ended. The clock is an option (WithNow).
//
// # In Redis (NewRedis)
//
// Checks are decided by check.lua (EVALSHA; SCRIPT LOAD on NOSCRIPT, once per Redis start), one
// round trip whatever the number of limits. The script reads Redis TIME, so the nodes' clocks do
// not matter; decides every limit; writes only if all admit. It answers the counters after the
// Check, and the limiter works out Remaining and Reset from them with the memory limiter's
// arithmetic. Counters live in one hash per owner: a limit key "k:42:burst" is field "burst" of
// hash WithPrefix + "k:42" (the key up to its last ':'), so one HMGET reads and one HSET writes
// all the counters of an owner, whatever their number: a Check with 2 windows and a quota is two
// commands and one key lookup (one key per counter took four commands and six lookups, which
// with 10,000 keys' counters cold in the cache was most of Redis's time per Check). A window's
// field holds its TAT in µs ("us:frac"); a quota's field is named after its period ("quota:d<days
// since 1970>" or "quota:m<YYYYMM>") and holds the usage; writing a new period's counter (see
// below) drops the earlier periods from the hash. Field ":exp" holds the hash's expiry (unix
// ms), which is moved on only when a counter needs it later (past a window's TAT, or an hour
// past a quota's period) and then a window's period further, so about once per period. An
// owner key holding another type fails its Checks. With Redis Cluster put a hash tag in the
// prefix, since the owners of one batch of Checks must share a slot. The script's arithmetic
// is in µs on Lua's doubles: the decisions are exact for limits below 9×10⁷ per window.
//
// Concurrent Checks share round trips: four workers each take the Checks waiting when they are
// free (never waiting for more, at most 64) and send them as one EVALSHA, which decides them one
// after the other, each atomically and all-or-nothing as if alone. With 50 concurrent callers
// that is about 0.11 round trips per Check; Redis parses one command and enters Lua once for the
// batch (redis-benchmark, 2 windows and a quota on hot keys: 13.6 µs of Redis time per Check in
// batches of 8, 20 µs alone).
//
// When a quota counter is missing (a new period, a new key, or a Redis that came back empty),
// the script reports it instead of deciding; the limiter asks Seed for the usage the database
// recorded (without Seed, a missing counter starts at 0), writes it with HSETNX (so when nodes
// race, the first value stays and all count on it) in one call for all the Check's missing
// counters, which also drops the quota's earlier periods, and runs the script again.
//
// Every Redis call has a timeout (WithTimeout, 50ms by default; a client without
// ContextTimeoutEnabled is waited for in a goroutine, so a hung Redis never hangs a Check). A
// failed call increments keygate_limiter_store_errors_total and switches the limiter to its
// StoreErrorMode for WithRetryBackoff (250ms by default); after that, one Check at a time tries
// Redis again, so recovery needs no restart. The modes (ratelimit.on_store_error):
//
//   - Local (default): an in-memory limiter on this node enforces the windows and quotas,
//     quotas starting from the last usage Redis reported to this node, or from Seed when it
//     never saw the counter or what it saw is more than 2s old (the larger of the two then). On recovery the usage it admitted is added to the Redis counters
//     that survived (a counter that is gone is refilled by Seed from the database, which
//     counted those requests). Windows are per node meanwhile, so a cluster of N nodes admits
//     up to N times a window.
//   - Open: everything is admitted.
//   - Closed: Check returns an error wrapping ErrUnavailable (SPEC: 503 UNAVAILABLE).
//
// A Check whose caller stops waiting — its client went away, or the per-call timeout sent it to
// the fallback — may still be run by Redis (a frozen Redis runs it when it wakes up). The
// limiter keeps reading every answer, and an answer that arrives for a caller that left has its
// quota consumption given back (HINCRBY on the counters that still exist): the request was not
// served, or the Local fallback counted it and adds it to Redis itself on recovery. Windows keep
// such a unit (a GCRA timestamp cannot be moved back once later Checks moved it on); with Open
// the request was served uncounted, as Open does. An answer that never comes (Redis lost, or
// slower than the timeout of its batch) cannot be refunded: that request may count although
// it was not served, on the strict side. The database's usage record lags by up to its flush
// interval (1s), which bounds what a Redis loss can let overshoot.
package ratelimit
