-- wrk script: POST pre-signed webhooks, each request prepared once so that the load
-- generator spends next to nothing per request. BODIES names a file of lines
-- "<x-hub-signature-256>\t<body>" (`loadgen presign`). With ONCE=1 every body is sent
-- exactly once across all threads and a thread stops when its share is done (end to end:
-- every event is new); otherwise the bodies cycle (ingest only: nothing downstream
-- deduplicates). With RATE=<requests per second> the load is paced: request k of a thread
-- is due at start + k / (RATE / THREADS) whatever answers came back (open loop, so a
-- slow pipeline builds a backlog in its own stores, not in the generator); a connection
-- sends early only to catch up on requests already due. Needs enough connections for the
-- rate (connections x 1000 / latency ms).
local reqs, n, i = {}, 0, 0
local once = os.getenv("ONCE") == "1"
local counts = {}

function setup(thread)
  table.insert(counts, thread)
  thread:set("index", #counts - 1)
end

local rate = tonumber(os.getenv("RATE") or "0")
local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } switchboard_timespec;
  int clock_gettime(int clock, switchboard_timespec *ts);
]]
local ts = ffi.new("switchboard_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local start, scheduled, interval = nil, 0, 0

function init(args)
  local threads = tonumber(os.getenv("THREADS") or "1")
  if rate > 0 then
    interval = 1000 * threads / rate
  end
  local k = 0
  for line in io.lines(os.getenv("BODIES")) do
    if k % threads == index then
      local tab = line:find("\t", 1, true)
      local headers = {
        ["Content-Type"] = "application/json",
        ["X-Hub-Signature-256"] = line:sub(1, tab - 1),
      }
      n = n + 1
      reqs[n] = wrk.format("POST", wrk.path, headers, line:sub(tab + 1))
    end
    k = k + 1
  end
end

if rate > 0 then
  -- wrk asks before each request how many milliseconds to wait.
  function delay()
    local t = now_ms()
    if start == nil then
      start = t
    end
    local due = start + scheduled * interval
    scheduled = scheduled + 1
    if due > t then
      return due - t
    end
    return 0
  end
end

-- wrk calls request() once per thread before the run and discards that request (seen:
-- the first body never arrived): answer that call without using up a body.
local probed = false

function request()
  if not probed then
    probed = true
    return reqs[1]
  end
  i = i + 1
  if i > n then
    if once then
      wrk.thread:stop()
      return reqs[n]
    end
    i = 1
  end
  return reqs[i]
end

function done(summary, latency, requests)
  io.write(string.format(
    "wrk: requests %d in %.2f s = %.0f/s; errors connect %d read %d write %d timeout %d status %d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status))
  io.write(string.format("wrk: latency p50 %.2f ms p90 %.2f ms p99 %.2f ms max %.2f ms\n",
    latency:percentile(50) / 1e3, latency:percentile(90) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3))
end
