// Real OpenAI clients calling spool's OpenAI-compatible routes, for the
// specs (spec/openai_spec.lua): the official `openai` SDK and the AI SDK's
// OpenAI-compatible provider, both pinned in package.json. One argument: a
// JSON plan.
//
//   { "baseURL": "http://127.0.0.1:PORT/v1", "apiKey": TOKEN,
//     "steps": [ { "models": true }
//              | { "chat": MODEL, "messages": [...], "stream": bool,
//                  "metadata": {...}, "usage": bool }
//              | { "responses": MODEL, "input": TEXT | [...],
//                  "previous": RESPONSE_ID, "stream": bool }
//              | { "retrieve": RESPONSE_ID }
//              | { "aisdk": MODEL, "prompt": TEXT, "stream": bool } ] }
//
// Prints one JSON line per step: the models; a completion or a response
// (with the SDK's output_text); for a stream { "text", "deltas" (how many
// pieces), "finish", "usage", "spool", "events" (a response stream's event
// types, in order), "response" (its last) }; or { "error": { "status",
// "message", "type", "code" } }.
import OpenAI from "openai";
import { createOpenAICompatible } from "@ai-sdk/openai-compatible";
import { generateText, streamText } from "ai";

const plan = JSON.parse(process.argv[2]);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const client = new OpenAI({ baseURL: plan.baseURL, apiKey: plan.apiKey, maxRetries: 0 });
const provider = createOpenAICompatible({ name: "spool", baseURL: plan.baseURL, apiKey: plan.apiKey });

async function chat(step) {
  const params = { model: step.chat, messages: step.messages };
  if (step.metadata) params.metadata = step.metadata;
  if (!step.stream) return client.chat.completions.create(params);
  const stream = await client.chat.completions.create({
    ...params, stream: true, stream_options: step.usage ? { include_usage: true } : undefined,
  });
  let text = "", deltas = 0, finish = null, usage = null, spool = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice && choice.delta && choice.delta.content) {
      text += choice.delta.content;
      deltas++;
    }
    if (choice && choice.finish_reason) finish = choice.finish_reason;
    if (chunk.usage) usage = chunk.usage;
    if (chunk.spool) spool = chunk.spool;
  }
  return { text, deltas, finish, usage, spool };
}

async function responses(step) {
  const params = { model: step.responses, input: step.input };
  if (step.previous) params.previous_response_id = step.previous;
  if (!step.stream) {
    const r = await client.responses.create(params);
    return { ...r, output_text: r.output_text };
  }
  const stream = await client.responses.create({ ...params, stream: true });
  let text = "", deltas = 0, response = null;
  const events = [];
  for await (const event of stream) {
    if (events[events.length - 1] !== event.type) events.push(event.type);
    if (event.type === "response.output_text.delta") {
      text += event.delta;
      deltas++;
    }
    if (event.response) response = event.response;
  }
  return { text, deltas, events, response };
}

async function aisdk(step) {
  const model = provider(step.aisdk);
  if (!step.stream) {
    const r = await generateText({ model, prompt: step.prompt, maxRetries: 0 });
    return { text: r.text, finish: r.finishReason, usage: r.usage };
  }
  const r = streamText({ model, prompt: step.prompt, maxRetries: 0 });
  let text = "", deltas = 0;
  for await (const piece of r.textStream) {
    text += piece;
    deltas++;
  }
  return { text, deltas, finish: await r.finishReason };
}

for (const step of plan.steps) {
  try {
    if (step.models) out(await client.models.list().then((page) => page.data));
    else if (step.chat) out(await chat(step));
    else if (step.responses) out(await responses(step));
    else if (step.retrieve) {
      const r = await client.responses.retrieve(step.retrieve);
      out({ ...r, output_text: r.output_text });
    }
    else out(await aisdk(step));
  } catch (e) {
    out({ error: { status: e.status ?? e.statusCode ?? null, message: String(e.message),
                   type: e.type ?? e.error?.type ?? null, code: e.code ?? e.error?.code ?? null } });
  }
}
