-- spool.run.format: events as one readable line each, for terminals and logs.
--
--   support ▸ "Hi, my order 5531 arrived broken"
--   classify · step 1 · mock-1 · 2 ms · 180→24 tokens
--   classify → classify {"category":"refund","order_id":"5531"}
--   lookup ← get_order {"id":"5531","status":"delivered"}
--   refund ! issue_refund: amount: must be <= 120
--   support ✓ Dear Ana, ...
--
-- Long values are cut to keep one event on one line, except the final
-- answer of a top-level thread; `spool run --json` prints events whole.

local rendering = require "spool.run.render"

local M = {}

M.width = 160


local function short(v, width)
  local s = rendering.render_value(v):gsub("%s+", " ")
  width = width or M.width
  if #s > width then
    -- Cut on a UTF-8 boundary.
    local cut = width
    while cut > 0 and (s:byte(cut + 1) or 0) & 0xC0 == 0x80 do
      cut = cut - 1
    end
    s = s:sub(1, cut) .. "…"
  end
  return s
end


local renderers = {
  input = function(ev)
    local v = ev.data.input
    return "▸ " .. (type(v) == "string" and string.format("%q", short(v))
      or short(v))
  end,
  model_call = function(ev)
    local u = ev.data.usage or {}
    local attempts = ev.data.attempts or {}
    return string.format("· step %d · %s · %d ms · %d→%d tokens%s%s",
      ev.step, tostring(ev.data.model), ev.data.latency_ms or 0,
      u.input_tokens or 0, u.output_tokens or 0,
      ev.data.cost_usd and string.format(" · $%.6f", ev.data.cost_usd) or "",
      #attempts > 1 and string.format(" · %d attempts", #attempts) or "")
  end,
  llm_call = function(ev)
    local u = ev.data.usage or {}
    if ev.data.error then
      return "· a model call of the agent's own failed: " .. short(ev.data.error)
    end
    return string.format("· a model call of the agent's own · %s · %d ms · "
      .. "%d→%d tokens", tostring(ev.data.model), ev.data.latency_ms or 0,
      u.input_tokens or 0, u.output_tokens or 0)
  end,
  delivery_failed = function(ev)
    return string.format("! nobody was asked by %s%s: %s (%d tries)",
      tostring(ev.data.channel), ev.data.to and (" (" .. ev.data.to .. ")")
        or "", short(ev.data.error), ev.data.attempts or 1)
  end,
  intent = function(ev)
    return string.format("→ %s %s", ev.data.name, short(ev.data.args))
  end,
  tool_result = function(ev)
    return string.format("← %s %s", ev.data.name, short(ev.data.result))
  end,
  error = function(ev)
    return "! " .. (ev.data.name and (ev.data.name .. ": ") or "")
      .. short(ev.data.error)
  end,
  done = function(ev, thread)
    local r = ev.data.result
    if thread.depth > 0 then
      return "✓ " .. short(r)
    end
    return "✓ " .. (type(r) == "string" and r or short(r, 100000))
  end,
  prefetch = function(ev)
    return string.format("⇣ %s %s", ev.data.name, ev.data.error
      and ("error: " .. short(ev.data.error)) or short(ev.data.result))
  end,
  compaction = function(ev)
    local r = ev.data.ranges or {}
    return string.format("⊟ compacted events %s–%s into a summary (%d tokens "
      .. "before)", tostring(r[1] and r[1][1]), tostring(ev.data.upto),
      ev.data.tokens_before or 0)
  end,
  event_summary = function(ev)
    return string.format("≈ summary of event %s: %s", tostring(ev.data.of),
      short(ev.data.summary))
  end,
  failed = function(ev)
    return "✗ " .. tostring(ev.data.error)
  end,
  warning = function(ev)
    return "⚠ " .. tostring(ev.data.message)
  end,
  agent_call = function(ev)
    return "⇢ " .. ev.data.agent
  end,
  human_request = function(ev)
    local d = ev.data
    local what
    if d.kind == "ask" then
      what = "asks: " .. tostring(d.question)
    elseif d.kind == "event" then
      what = "waits for the event " .. tostring(d.event)
    else
      what = "needs approval: " .. tostring(d.name) .. " " .. short(d.args or {})
    end
    return "? " .. what .. (d.via and (" (from " .. d.via .. ")") or "")
  end,
  human_response = function(ev)
    local d = ev.data
    local what
    if d.kind == "ask" then
      what = d.answer ~= nil and ("answered: " .. short(d.answer))
        or "no answer before the deadline"
    elseif d.kind == "event" then
      what = "event " .. tostring(d.event) .. (d.data ~= nil
        and (": " .. short(d.data)) or "")
    elseif d.approved then
      what = "approved" .. (d.args and (" with " .. short(d.args)) or "")
    else
      what = "rejected" .. (d.reason and (": " .. d.reason) or "")
    end
    return "= " .. what .. (d.by and (" (by " .. d.by .. ")") or "")
  end,
  started = function(ev)
    return "… " .. ev.data.name .. " started"
  end,
  cancelled = function(ev)
    return "✗ cancelled" .. (ev.data.reason and (": " .. ev.data.reason) or "")
  end,
  agent_result = function(ev)
    return string.format("⇠ %s %s", ev.data.agent, ev.data.status)
  end,
}


-- One row per thread: id, agent, status, events, last change.
function M.thread_row(row)
  local when = os.date("!%Y-%m-%d %H:%M:%S", (row.updated_at or 0) // 1000)
  return string.format("%-28s  %-12s  %-9s  %4d  %s%s", row.id, row.agent,
    row.status, row.events or 0, when,
    type(row.parent) == "string" and ("  (in " .. row.parent .. ")") or "")
end


-- One line for an event of a thread (a final answer may span lines).
function M.event(thread, ev)
  local render = renderers[ev.type]
  local body = render and render(ev, thread)
    or (ev.type .. " " .. short(ev.data))
  return thread.agent .. " " .. body
end


return M
