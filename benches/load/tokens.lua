-- wrk script for benches/load/run: every request carries the next token of a file (one JWT per
-- line), so no token repeats within a run as long as the file is long enough.
--
--   wrk ... URL -- TOKEN_FILE [FIRST] [STOP_AFTER MARKER]
--
-- FIRST (default 1) is the 1-based line to start from (the warm-up and the measured run use
-- disjoint ranges). STOP_AFTER (optional) stops sending after that many responses and creates
-- the file MARKER: wrk itself runs on until -d, so the caller waits for MARKER and then sends
-- wrk SIGINT (it then prints its summary as usual).
-- done() prints "TOKENS next=N wrapped=W": the line the next run should start from and how many
-- times the file was exhausted (W > 0 means tokens repeated: the file was too short).
-- TOKEN_REPEAT=K in the environment sends each token K times in a row (the memory test uses 2:
-- jwtgate caches a token from its second verification on).

local threads = {}

-- With several wrk threads (-tN and WRK_THREADS=N), thread k of N sends lines FIRST+k,
-- FIRST+k+N, …: no token is sent by two threads.
function setup(thread)
  table.insert(threads, thread)
  thread:set("lane", #threads - 1)
end

function init(args)
  local file = args[1] or error("usage: -- TOKEN_FILE [FIRST] [STOP_AFTER]")
  tokens = {}
  local n = 0
  for line in io.lines(file) do
    if #line > 0 then
      n = n + 1
      tokens[n] = line
    end
  end
  if n == 0 then error("no tokens in " .. file) end
  count = n
  -- Each thread has its own Lua state: the thread count comes from the environment.
  lanes = tonumber(os.getenv("WRK_THREADS") or "1")
  lane = lane or 0
  idx = tonumber(args[2] or "1")
  if idx < 1 or idx > n then idx = 1 end
  idx = idx + lane
  if idx > n then idx = 1 + lane end
  wrapped = 0
  each = tonumber(os.getenv("TOKEN_REPEAT") or "1")
  uses = 0
  stop_after = tonumber(args[3] or "0")
  marker = args[4]
  responses = 0
  local host = wrk.host
  if wrk.port then host = host .. ":" .. wrk.port end
  prefix = "GET " .. wrk.path .. " HTTP/1.1\r\nHost: " .. host .. "\r\nAuthorization: Bearer "
  if stop_after > 0 then
    response = function(status, headers, body)
      responses = responses + 1
      if responses == stop_after then
        if marker then io.open(marker, "w"):close() end
        wrk.thread:stop()
      end
    end
  end
end

function request()
  local token = tokens[idx]
  uses = uses + 1
  if uses >= each then
    uses = 0
    idx = idx + lanes
    if idx > count then
      idx = 1 + lane
      wrapped = wrapped + 1
    end
  end
  return prefix .. token .. "\r\n\r\n"
end

function done(summary, latency, requests)
  -- The next run starts after the furthest line any thread reached.
  local next_idx, wrapped_total, count_seen = 0, 0, 0
  for _, thread in ipairs(threads) do
    next_idx = math.max(next_idx, thread:get("idx"))
    wrapped_total = wrapped_total + thread:get("wrapped")
    count_seen = thread:get("count")
  end
  io.write(string.format("TOKENS next=%d wrapped=%d count=%d\n", next_idx, wrapped_total, count_seen))
end
