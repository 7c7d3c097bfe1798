-- bench/agents W4: a one-step agent on the in-process mock model.
return { mock = "mock.lua", store = ":memory:" }
