-- wrk script: POST the body in $BODY with Content-Type $CTYPE to the URL given on the command line.
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("CTYPE")
local f = assert(io.open(os.getenv("BODY"), "rb"))
wrk.body = f:read("*a")
f:close()
