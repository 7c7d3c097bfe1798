// The Vercel AI SDK (ai@4, @ai-sdk/openai@1) as a benchmark contender:
// generateText with one tool and maxSteps, over Chat Completions.
import { argv, exit } from "node:process";
import { generateText, tool } from "ai";
import { createOpenAI } from "@ai-sdk/openai";
import { z } from "zod";
import { parseArgs, report, runBatch } from "./harness.mjs";

const opt = parseArgs(argv.slice(2));
const model = createOpenAI({ baseURL: opt.base, apiKey: "mock",
  compatibility: "compatible" }).chat("mock-1");
const tools = { add: tool({ description: "Add two numbers.",
  parameters: z.object({ a: z.number(), b: z.number() }),
  // A number: the SDK sends JSON.stringify of the result, so "1".
  execute: async ({ a, b }) => a + b }) };

async function oneRun() {
  const r = await generateText({ model, tools, maxSteps: opt.steps + 2,
    maxRetries: 0, system: "You are a calculator. Use the add tool.",
    prompt: "Start at 0 and add 1, one tool call at a time." });
  return r.text;
}

report("ai-sdk", opt, await runBatch(opt, oneRun));
exit(0);
