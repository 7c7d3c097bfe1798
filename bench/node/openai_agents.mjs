// The OpenAI Agents SDK for JavaScript (@openai/agents@0.1) as a benchmark
// contender: an Agent with one tool, run over Chat Completions, tracing off.
import { argv, exit } from "node:process";
import { Agent, run, tool, setDefaultOpenAIClient, setOpenAIAPI,
  setTracingDisabled } from "@openai/agents";
import OpenAI from "openai";
import { z } from "zod";
import { parseArgs, report, runBatch } from "./harness.mjs";

const opt = parseArgs(argv.slice(2));
setTracingDisabled(true);
setOpenAIAPI("chat_completions");
setDefaultOpenAIClient(new OpenAI({ baseURL: opt.base, apiKey: "mock",
  maxRetries: 0 }));
const add = tool({ name: "add", description: "Add two numbers.",
  parameters: z.object({ a: z.number(), b: z.number() }),
  execute: async ({ a, b }) => String(a + b) });
const agent = new Agent({ name: "calc", model: "mock-1", tools: [add],
  instructions: "You are a calculator. Use the add tool." });

async function oneRun() {
  const r = await run(agent, "Start at 0 and add 1, one tool call at a time.",
    { maxTurns: opt.steps + 2 });
  return r.finalOutput;
}

report("openai-agents", opt, await runBatch(opt, oneRun));
exit(0);
