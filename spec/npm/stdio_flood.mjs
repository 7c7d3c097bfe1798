// Floods `spool mcp` over stdio for spec/mcp_server_spec.lua: writes N
// pings whose ids are SIZE bytes long, reads nothing for PAUSE_MS (or, with
// "eof", closes stdin at once), then reads every reply. Prints one JSON
// line: { replies, ids_in_order, exit_code }.
// Usage: node stdio_flood.mjs N SIZE PAUSE_MS eof|open -- COMMAND ARGS...
import { spawn } from "node:child_process";

const [n, size, pauseMs, mode, dashes, ...command] = process.argv.slice(2);
if (dashes !== "--") throw new Error("usage: N SIZE PAUSE_MS eof|open -- COMMAND...");
const child = spawn(command[0], command.slice(1), { stdio: ["pipe", "pipe", "inherit"] });
child.stdout.pause();
const ids = [];
for (let i = 0; i < Number(n); i++) {
  const id = String(i).padStart(6, "0") + "x".repeat(Number(size));
  ids.push(id);
  child.stdin.write(JSON.stringify({ jsonrpc: "2.0", id, method: "ping" }) + "\n");
}
if (mode === "eof") child.stdin.end();
let buffered = "";
const replies = [];
setTimeout(() => {
  child.stdout.on("data", (chunk) => {
    buffered += chunk;
    let nl;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      replies.push(JSON.parse(buffered.slice(0, nl)));
      buffered = buffered.slice(nl + 1);
      if (mode !== "eof" && replies.length === ids.length) child.stdin.end();
    }
  });
  child.stdout.resume();
}, Number(pauseMs));
child.on("exit", (code) => {
  const got = replies.map((r) => r.id);
  console.log(JSON.stringify({ replies: replies.length, ids_in_order: got.join() === ids.join(),
                               errors: replies.filter((r) => r.error).length, exit_code: code,
                               rest: buffered.length }));
});
