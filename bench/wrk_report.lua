-- wrk script of the agentq benchmark.
-- Arguments (after --): METHOD [BODY_FILE|-] [IDS_FILE PATH_PREFIX]
--   METHOD     the HTTP method of every request;
--   BODY_FILE  a file whose bytes are each request's body, or - for none;
--   IDS_FILE   optional: one id per line; each request then goes to PATH_PREFIX .. a random id.
-- At the end it prints one JSON line with the counts and latency percentiles (microseconds).

local ids = nil
local prefix = nil

function init(args)
   wrk.method = args[1] or "GET"
   if args[2] and args[2] ~= "-" then
      local file = assert(io.open(args[2], "rb"))
      wrk.body = file:read("*a")
      file:close()
   end
   if args[3] then
      ids = {}
      for line in io.lines(args[3]) do
         if #line > 0 then ids[#ids + 1] = line end
      end
      prefix = args[4]
      math.randomseed(os.time() + math.floor(os.clock() * 1000000))
   end
end

function request()
   if ids then
      return wrk.format(nil, prefix .. ids[math.random(#ids)])
   end
   return wrk.format()
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, "status_errors": %d, ' ..
      '"connect_errors": %d, "read_errors": %d, "write_errors": %d, "timeouts": %d, ' ..
      '"p50_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
      summary.requests, summary.duration, summary.bytes, e.status,
      e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.mean, latency.max))
end
