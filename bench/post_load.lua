-- wrk script: POST the body in $BODY with Content-Type $CTYPE and bearer $TOKEN to the URL given
-- on the command line.
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CTYPE")
wrk.headers["Authorization"] = "Bearer " .. os.getenv("TOKEN")
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
