-- wrk script: POST /preprocess with 500-byte JSON bodies, each one distinct (thread id and a
-- counter in the text) so the reflex cache never answers and every request is a full scan.
local prose = "Could you help me refactor the billing service? The nightly job in cron runs at 02:00 and " ..
  "takes about 45 minutes, mostly in the reconcile step that loads 120000 rows into memory. I would like to stream " ..
  "the rows instead, keep the retry logic, and add a metric for the batch size. The code lives in src/billing/job.rs " ..
  "and the docs are at https://wiki.example.com/billing/runbook. We deploy with make && make install on Debian 12. "
local size = 500
local threads = 0

function setup(thread)
  thread:set("thread_id", threads)
  threads = threads + 1
end

local counter = 0
request = function()
  counter = counter + 1
  local head = string.format('{"input_text":"request %d-%d: ', thread_id or 0, counter)
  local tail = '"}'
  local room = size - #head - #tail
  local text = string.rep(prose, 2):sub(1, room)
  return wrk.format("POST", "/preprocess", { ["Content-Type"] = "application/json" }, head .. text .. tail)
end
