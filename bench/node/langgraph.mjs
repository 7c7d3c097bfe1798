// LangGraph.js as a benchmark contender: the prebuilt ReAct agent over
// ChatOpenAI with one tool (LangSmith tracing is off unless configured).
import { argv, exit } from "node:process";
import { createReactAgent } from "@langchain/langgraph/prebuilt";
import { ChatOpenAI } from "@langchain/openai";
import { tool } from "@langchain/core/tools";
import { z } from "zod";
import { parseArgs, report, runBatch } from "./harness.mjs";

const opt = parseArgs(argv.slice(2));
const llm = new ChatOpenAI({ model: "mock-1", apiKey: "mock", maxRetries: 0,
  configuration: { baseURL: opt.base } });
const add = tool(async ({ a, b }) => String(a + b), { name: "add",
  description: "Add two numbers.",
  schema: z.object({ a: z.number(), b: z.number() }) });
const agent = createReactAgent({ llm, tools: [add],
  prompt: "You are a calculator. Use the add tool." });

async function oneRun() {
  const r = await agent.invoke({ messages: [{ role: "user",
    content: "Start at 0 and add 1, one tool call at a time." }] },
  { recursionLimit: 2 * (opt.steps + 2) + 1 });
  return r.messages[r.messages.length - 1].content;
}

report("langgraph", opt, await runBatch(opt, oneRun));
exit(0);
