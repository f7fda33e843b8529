-- POSTs pre-built request bodies round-robin and prints a JSON summary line when done.
-- Usage: wrk -s post.lua <url> -- <directory> <count>
-- <directory> holds body-<i> and body-<i>.headers ("Name: value" lines) for i in 0..count-1.

local requests = {}
local index = 0

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local data = file:read("*a")
  file:close()
  return data
end

function init(args)
  local directory, count = args[1], tonumber(args[2])
  for i = 0, count - 1 do
    local headers = {}
    for line in read_file(directory .. "/body-" .. i .. ".headers"):gmatch("[^\n]+") do
      local name, value = line:match("^([^:]+):%s*(.*)$")
      headers[name] = value
    end
    requests[#requests + 1] = wrk.format("POST", nil, headers, read_file(directory .. "/body-" .. i))
  end
  -- Threads start at different bodies so concurrent requests carry different images.
  index = math.random(0, #requests - 1)
end

function request()
  index = index % #requests + 1
  return requests[index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p95":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95), latency:percentile(99)))
end
