// Package serve serves completions of a base model and of the sparse
// deltas made from it over HTTP, with a JSON API shaped like the
// completion APIs clients know (POST /v1/completions, GET /v1/models,
// server-sent events for streams), GET /healthz and Prometheus metrics
// (GET /metrics). The README documents the API and `dstune serve`.
//
// The base weights are loaded once and every request computes with them.
// A request's delta is written into them for its forward passes and the
// original values put back afterwards (Patch); a Scheduler makes sure
// that passes of different deltas never overlap, admits every waiting
// pass of a delta together, and lets a request keep its delta applied
// across passes for a bounded time so that switching costs at most
// 1/YieldFactor of the compute. Each pass therefore sees exactly the
// weights `dstune apply` would write, and a request gets the tokens that
// `dstune apply` then `dstune generate` give for the same seed.
//
// Deltas are files NAME.safetensors in a directory, served as model NAME:
// loaded on first use, reloaded when the file changes, refused (409) when
// made for another base model and (422) when the file cannot be read. A
// loaded delta holds its positions and values — about its file's size;
// the loaded deltas are bounded in bytes (Config.DeltaCacheBytes), the
// least recently used dropped first, and those whose file is gone or
// changed dropped too (a request using one keeps it until it ends).
package serve
