// The official MCP SDK's client, driving spool's MCP server for the specs
// (spec/mcp_server_spec.lua). One argument: a JSON plan.
//
//   { "http": { "url": "...", "token": "..." }       Streamable HTTP, or
//     "stdio": { "command": "...", "args": [...] },  a child over stdio
//     "elicit": { "action": "accept", "content": {...} },   optional: the
//        client can be asked through forms, and answers so ({ "hang": true }:
//        never answers)
//     "steps": [ { "list": true } | { "call": NAME, "arguments": {...},
//                  "progress": true, "cancel_after_ms": N,
//                  "meta": {...} (the request's _meta) } ] }
//
// Prints one JSON line per step: { "tools": [...] } or { "result": ...,
// "progress": [...] } or { "error": message }, and { "elicited": [...] }
// at the end: what spool asked through forms.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const plan = JSON.parse(process.argv[2]);
const out = (value) => process.stdout.write(JSON.stringify(value) + "\n");
const capabilities = plan.elicit ? { elicitation: {} } : {};
const client = new Client({ name: "spool-spec", version: "1.0.0" }, { capabilities });
const elicited = [];
if (plan.elicit) {
  client.setRequestHandler(ElicitRequestSchema, async (request) => {
    elicited.push(request.params);
    if (plan.elicit.hang) {
      out({ hanging: request.params.message });
      return new Promise(() => {}); // a person who never answers
    }
    return plan.elicit;
  });
}

const transport = plan.http
  ? new StreamableHTTPClientTransport(new URL(plan.http.url), {
      requestInit: { headers: { Authorization: `Bearer ${plan.http.token}` } },
    })
  : new StdioClientTransport({ command: plan.stdio.command, args: plan.stdio.args, stderr: "inherit" });

try {
  await client.connect(transport);
  out({ server: client.getServerVersion(), protocol: transport.protocolVersion ?? null,
        session: transport.sessionId ?? null });
  for (const step of plan.steps) {
    try {
      if (step.list) {
        out(await client.listTools());
      } else {
        const progress = [];
        const controller = new AbortController();
        if (step.cancel_after_ms) setTimeout(() => controller.abort("the spec cancels it"), step.cancel_after_ms);
        const result = await client.callTool({ name: step.call, arguments: step.arguments, _meta: step.meta }, undefined, {
          onprogress: step.progress ? (p) => progress.push(p) : undefined,
          signal: controller.signal,
          timeout: 60000,
        });
        out({ result, progress });
      }
    } catch (e) {
      out({ error: String(e && e.message ? e.message : e) });
      // The SDK sends notifications/cancelled without waiting for it:
      // give it time to arrive before the client closes.
      if (step.cancel_after_ms) await new Promise((r) => setTimeout(r, 1000));
    }
  }
  out({ elicited });
  await client.close();
} catch (e) {
  out({ error: String(e && e.message ? e.message : e) });
  process.exitCode = 1;
}
