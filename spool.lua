-- The demo project's settings. Flags override environment variables,
-- which override this file.
return {
  -- A real model is used when OPENAI_API_KEY (or OPENAI_BASE_URL) is set;
  -- otherwise the built-in mock model answers, following this script.
  mock = "mock/support.lua",
  model = { name = "gpt-4o-mini", temperature = 0 },
}
