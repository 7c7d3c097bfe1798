-- wrk script: one chat completion from the mock model, what each run of
-- bench/serve_project's echo agent asks for.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"model":"mock-1","messages":[{"role":"system","content":"Answer with the finish tool."},{"role":"user","content":"hello"}],"tools":[{"type":"function","function":{"name":"finish","description":"Finish with the final answer.","parameters":{"type":"object","properties":{"answer":{"type":"string"}},"required":["answer"]}}}]}'
