-- wrk script: cycles over pre-signed events (load-tests/wrk_events.py writes the
-- `events` table into the file named by EVENTS) and counts every answer that is not
-- a 200 decision, so a throughput figure built on errors cannot pass unnoticed.
--   EVENTS=/tmp/events.lua wrk -t1 -c32 -d10s -s load-tests/wrk.lua http://127.0.0.1:PORT
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  dofile(os.getenv("EVENTS"))
  i = 0
  bad = 0
  answered = 0
  check = os.getenv("CHECK") ~= "0"
end

function request()
  i = i % #events + 1
  local e = events[i]
  return wrk.format("POST", "/webhooks/stripe",
    { ["Content-Type"] = "application/json", ["Stripe-Signature"] = e[2] }, e[1])
end

function response(status, headers, body)
  answered = answered + 1
  if status ~= 200 or (check and not string.find(body, '"approved"', 1, true)) then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad, total = 0, 0
  for _, t in ipairs(threads) do
    total_bad = total_bad + t:get("bad")
    total = total + t:get("answered")
  end
  io.write(string.format("WRK_RESULT rps=%.1f answered=%d bad=%d p50_us=%d p99_us=%d\n",
    summary.requests / (summary.duration / 1e6), total, total_bad,
    latency:percentile(50), latency:percentile(99)))
end
