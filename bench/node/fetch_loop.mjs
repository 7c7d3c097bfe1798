// A plain Node loop as a benchmark contender: the agent written by hand
// with fetch, no framework. Same interface as bench/spool-driver.
import { argv, exit, memoryUsage, cpuUsage } from "node:process";
import { parseArgs, report, runBatch } from "./harness.mjs";

const opt = parseArgs(argv.slice(2));
const url = `${opt.base}/chat/completions`;
const tools = [{ type: "function", function: { name: "add",
  description: "Add two numbers.", parameters: { type: "object",
    properties: { a: { type: "number" }, b: { type: "number" } },
    required: ["a", "b"], additionalProperties: false } } }];

async function oneRun() {
  const messages = [
    { role: "system", content: "You are a calculator. Use the add tool." },
    { role: "user", content: "Start at 0 and add 1, one tool call at a time." },
  ];
  for (let step = 0; step <= opt.steps + 1; step++) {
    const res = await fetch(url, { method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model: "mock-1", messages, tools }),
      signal: AbortSignal.timeout(opt.timeoutS * 1000) });
    if (!res.ok) throw new Error(`HTTP ${res.status}`);
    const msg = (await res.json()).choices[0].message;
    messages.push(msg);
    if (!msg.tool_calls || msg.tool_calls.length === 0) return msg.content;
    for (const c of msg.tool_calls) {
      const { a, b } = JSON.parse(c.function.arguments);
      messages.push({ role: "tool", tool_call_id: c.id, content: String(a + b) });
    }
  }
  throw new Error("too many steps");
}

report("node-fetch", opt, await runBatch(opt, oneRun));
exit(0);
