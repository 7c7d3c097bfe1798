return { mock = "mock.lua", store = ":memory:" }
