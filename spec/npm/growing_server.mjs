// An MCP server whose tool list changes (for spec/mcp_spec.lua), made with
// the official SDK's McpServer over stdio: calling `grow` adds the tool
// `fresh`, and the SDK tells clients (notifications/tools/list_changed).
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

const server = new McpServer({ name: "growing", version: "1.0.0" });
const text = (t) => ({ content: [{ type: "text", text: t }] });
let grown = false;
server.registerTool("grow", { description: "Adds the tool fresh." }, async () => {
  if (!grown) {
    grown = true;
    server.registerTool("fresh", { description: "A tool that was not there at first." }, async () => text("fresh works"));
  }
  return text("grew");
});
await server.connect(new StdioServerTransport());
