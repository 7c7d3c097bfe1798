-- spool replay THREAD [--agent NAME] [--json] [--live] [--keep]: re-runs a
-- stored thread through the agent's current code (spool.cli.evaluate.replay): the
-- model's replies, people's answers and the tools' results come from the
-- recording (no handler runs unless --live), and it says where the
-- behaviour diverges: the first tool call (name or arguments) that
-- differs, the first person asked differently, or the end. The replay's
-- own threads are deleted (--keep keeps them). With the agent's file
-- edited (or reloaded from elsewhere), this is how a change is checked
-- against what happened in production. Exit 0 when the behaviour is the
-- same, 1 when it diverges.

local json = require "spool.json"
local run_eval = require "spool.cli.evaluate"

local USAGE = "usage: spool replay THREAD [--agent NAME | --agent-file FILE] "
  .. "[--json] [--live] [--keep]"

local cli = require("spool.cli.command").new("replay", USAGE)
local o = cli:parse(arg, { ["--agent"] = "value", ["--agent-file"] = "value",
                           ["--json"] = "flag", ["--live"] = "flag",
                           ["--keep"] = "flag" }, { "thread" })
if not o.thread then
  cli:usage("needs a thread id")
end

local case, err, recorded = run_eval.case_of_thread(o.thread)
if not case then
  cli:fail(err)
end
local agent = o.agent or recorded.agent
local result, rerr = run_eval.with_version(o.agent_file, agent, function()
  return run_eval.replay(o.thread, agent, { live = o.live, keep = o.keep })
end)
if not result then
  cli:fail(rerr)
end
if o.json then
  io.write(json.encode({ same = result.same, divergence = result.divergence,
    recorded = { thread = result.recorded.thread, calls = result.recorded.intents,
                 status = result.recorded.status },
    replayed = { thread = result.replayed.thread, calls = result.replayed.intents,
                 status = result.replayed.status } }), "\n")
else
  io.write(string.format("recorded %s: %d calls, %s\n", result.recorded.thread,
    #result.recorded.calls, result.recorded.status))
  io.write(string.format("replayed %s: %d calls, %s\n", result.replayed.thread,
    #result.replayed.calls, result.replayed.status))
  io.write(result.same and "same behaviour\n"
    or ("diverges at " .. result.divergence .. "\n"))
end
os.exit(result.same and 0 or 1)
