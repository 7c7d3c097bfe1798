// A proxy that adds spool's bearer token to every request, for a client
// that cannot send one (the MCP conformance suite's server mode). Usage:
// node token_proxy.mjs TARGET_URL TOKEN; prints the port it listens on
// (127.0.0.1, a free one), then forwards until killed. The Host header
// names the target, as a client of it would; Origin passes as sent.
import http from "node:http";

const [target, token] = process.argv.slice(2);
const to = new URL(target);
const server = http.createServer((req, res) => {
  const headers = { ...req.headers, host: to.host, authorization: `Bearer ${token}` };
  const out = http.request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers }, (reply) => {
    res.writeHead(reply.statusCode, reply.headers);
    reply.pipe(res);
  });
  out.on("error", () => res.destroy());
  req.pipe(out);
});
server.listen(0, "127.0.0.1", () => console.log(server.address().port));
