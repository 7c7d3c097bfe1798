-- wrk script: start a thread of bench/serve_project's echo agent and wait
-- for its result (one durable run with one model call per request).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("SPOOL_TOKEN")
wrk.body = '{"agent":"echo","input":"hello","wait_ms":10000}'
