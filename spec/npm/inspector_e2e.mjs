// The web inspector in a real browser (Debian's Chromium, headless, driven
// by playwright-core) for spec/inspector_spec.lua: what a person does,
// found the way a person (or a screen reader) finds it, by role and label.
// Usage: node inspector_e2e.mjs URL TOKEN SHOTS_DIR
// Prints one JSON line per check passed, then { ok: true }; exits 1 with
// { error } at the first that fails.
import { chromium } from "playwright-core";

const [url, token, shots] = process.argv.slice(2);
const auth = { Authorization: `Bearer ${token}`, "Content-Type": "application/json" };
const say = (v) => process.stdout.write(JSON.stringify(v) + "\n");
const api = async (method, path, body) => {
  const res = await fetch(url + path, { method, headers: auth, body: body && JSON.stringify(body) });
  return res.json();
};
const until = async (what, fn, ms = 15000) => {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
};
const start = async (input) => (await api("POST", "/v1/threads", { agent: "w", input, wait_ms: 5000 })).id;

const browser = await chromium.launch({ executablePath: process.env.CHROMIUM || "/usr/bin/chromium", args: ["--no-sandbox"] });
const problems = [];
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 900 } });
  // (The refused token, the refused arguments and the 503 the test
  // answers are errors the page expects; anything else the console says
  // is one it does not.)
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of (401|422|503)\b/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  const shot = (name) => page.screenshot({ path: `${shots}/${name}.png`, fullPage: true });

  // A wrong token is refused, and said so.
  await page.goto(url + "/");
  await page.getByLabel("API token").fill("not-the-token");
  await page.getByRole("button", { name: "Open" }).click();
  await page.getByRole("alert").filter({ hasText: "not this server's" }).waitFor();
  await shot("login-refused");
  say({ check: "wrong token refused" });

  await page.getByLabel("API token").fill(token);
  await page.getByRole("button", { name: "Open" }).click();
  await page.getByRole("heading", { name: "Threads" }).waitFor();
  if (await page.locator("#token").inputValue() !== "") throw new Error("the token stays in the login form");
  say({ check: "the token is not left in the page" });

  // A page still loading when the person moves on draws nothing over the next.
  await page.route("**/v1/agents", async (r) => { await new Promise((ok) => setTimeout(ok, 1500)); await r.continue(); });
  await page.evaluate(() => { location.hash = "#/threads?status=done"; });
  await page.evaluate(() => { location.hash = "#/inbox"; });
  await page.getByRole("heading", { name: "Inbox" }).waitFor();
  await new Promise((ok) => setTimeout(ok, 2000));
  if (await page.getByRole("heading", { name: "Threads" }).count() !== 0) throw new Error("a slow page drew over the inbox");
  await page.unroute("**/v1/agents");
  await page.getByRole("navigation").getByRole("link", { name: "Threads" }).click();
  await page.getByRole("heading", { name: "Threads" }).waitFor();
  say({ check: "a slow page does not draw over the next" });

  // A thread started through the API appears, live.
  const refund = await start("refund please");
  const row = page.locator(`tr[data-thread="${refund}"]`);
  await row.waitFor();
  await shot("threads");
  await page.getByRole("group", { name: "Threads by status" }).getByRole("button", { name: "waiting 1" }).waitFor();
  say({ check: "a new thread appears live, and the counts by status", thread: refund });

  // Open it: its steps, and what it waits for.
  await row.getByRole("link", { name: refund }).click();
  await page.getByRole("heading", { name: `Thread ${refund}` }).waitFor();
  await page.getByText("asks a person").first().waitFor();
  await page.getByText("Waits for approval").waitFor();
  await shot("thread-waiting");
  say({ check: "a thread's steps and its wait" });

  // Edited arguments that do not fit the tool: the server's error, in place.
  const args = page.getByLabel(/Arguments of refund/);
  await args.fill('{"amount": "seven"}');
  await page.getByRole("button", { name: "Approve" }).click();
  await page.getByRole("alert").filter({ hasText: "do not fit the tool" }).waitFor();
  await shot("thread-bad-args");
  say({ check: "edited arguments checked against the schema" });

  // Edited arguments that fit: approved, and the thread finishes.
  await args.fill('{"amount": 7}');
  await page.getByRole("button", { name: "Approve" }).click();
  await page.locator(".facts .badge.done").waitFor();
  await page.getByText("refunded 7").first().waitFor();
  await shot("thread-done");
  say({ check: "approved with edited arguments, and done" });

  // Where the time went, and the exact request of step 1.
  await page.getByRole("figure").getByText("Steps over time").waitFor();
  const request = page.getByText("The request as sent").first();
  await request.click();
  await page.locator("details.request pre").first().getByText('"refund please"').waitFor();
  await page.locator("details.request").first().getByRole("cell", { name: "input" }).waitFor();
  await shot("thread-request");
  say({ check: "a step's waterfall and its exact request" });

  // Fork at the first event: a new thread, opened, that goes on from there.
  await page.getByRole("button", { name: "Fork a new thread at event 1", exact: true }).click();
  const forked = await until("the fork's page", async () => {
    const m = /#\/threads\/(t_\w+)/.exec(page.url());
    return m && m[1] !== refund && m[1];
  });
  await page.getByRole("heading", { name: `Thread ${forked}` }).waitFor();
  await until("the fork to run", async () => (await api("GET", `/v1/threads/${forked}`)).status === "waiting");
  await api("POST", `/v1/threads/${forked}/events`, { type: "reject", reason: "a fork" });
  say({ check: "forked at an event, and the fork runs" });

  // The inbox: reject one with a reason; answer a question by keyboard.
  const other = await start("refund again");
  const question = await start("ask me");
  await page.getByRole("navigation").getByRole("link", { name: "Inbox" }).click();
  await page.locator(`article[data-thread="${other}"]`).waitFor();
  await page.locator(`article[data-thread="${question}"]`).waitFor();
  await shot("inbox");
  const card = page.locator(`article[data-thread="${other}"]`);
  await card.getByLabel("Reason, to reject").fill("not this customer");
  await card.getByRole("button", { name: "Reject" }).click();
  await until("the rejection", async () => (await api("GET", `/v1/threads/${other}`)).status === "done");
  const rejected = (await api("GET", `/v1/threads/${other}`)).events.find((e) => e.type === "human_response");
  if (rejected.data.approved !== false || rejected.data.reason !== "not this customer") throw new Error("rejection: " + JSON.stringify(rejected.data));
  say({ check: "rejected with a reason" });

  const ask = page.locator(`article[data-thread="${question}"]`);
  // A refresh that fails (here a 503) keeps the page, and what is typed.
  await ask.getByRole("textbox", { name: "Answer", exact: true }).fill("bl");
  await page.route("**/v1/threads?status=waiting*", (r) => r.fulfill({ status: 503, contentType: "application/json", body: '{"error":{"code":"busy","message":"blip"}}' }));
  await page.waitForResponse((r) => r.url().includes("status=waiting") && r.status() === 503, { timeout: 15000 });
  await page.unroute("**/v1/threads?status=waiting*");
  if (await ask.getByRole("textbox", { name: "Answer", exact: true }).inputValue() !== "bl") throw new Error("a failed refresh wiped the answer being typed");
  say({ check: "a failed refresh keeps the page and what is typed" });
  await ask.getByRole("textbox", { name: "Answer", exact: true }).fill("");
  await ask.getByRole("textbox", { name: "Answer", exact: true }).focus();
  await page.keyboard.type("blue");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Enter");
  await until("the answer", async () => (await api("GET", `/v1/threads/${question}`)).result === "done after 1: blue");
  say({ check: "a question answered with the keyboard" });

  // A sub-agent's wait: answered on the thread that called it.
  const boss = (await api("POST", "/v1/threads", { agent: "boss", input: "refund for the boss", wait_ms: 5000 })).id;
  const bossCard = page.locator(`article[data-thread="${boss}"]`);
  await bossCard.waitFor();
  if (await page.locator("article.card").count() !== 1) throw new Error("the inbox shows the sub-agent's wait as well");
  await bossCard.getByRole("button", { name: "Approve" }).click();
  await until("the boss to finish", async () => (await api("GET", `/v1/threads/${boss}`)).result === "boss says: done after 1: refunded 5");
  say({ check: "a sub-agent's approval given on its parent" });

  // A thread's page keeps what is typed when it redraws.
  const asked = await start("ask again");
  await page.evaluate((id) => { location.hash = `#/threads/${id}`; }, asked);
  const answerBox = page.getByRole("textbox", { name: "Answer", exact: true });
  await answerBox.fill("half typed");
  await page.getByLabel("Only failed or waiting steps").check();
  await page.getByLabel("Only failed or waiting steps").uncheck();
  if (await answerBox.inputValue() !== "half typed") throw new Error("a redraw wiped the answer being typed");
  await api("POST", `/v1/threads/${asked}/cancel`, {});
  say({ check: "a thread's redraw keeps what is typed" });

  // Every control has a name in the accessibility tree.
  await page.getByRole("navigation").getByRole("link", { name: "Threads" }).click();
  await page.getByRole("heading", { name: "Threads" }).waitFor();
  const tree = await page.locator("body").ariaSnapshot();
  for (const want of ['combobox "Status"', 'combobox "Agent"', 'searchbox "Thread id"', 'button "Live updates: on"', 'navigation "Sections"']) {
    if (!tree.includes(want)) throw new Error(`the accessibility tree lacks ${want}:\n${tree}`);
  }
  say({ check: "controls are named in the accessibility tree" });

  await page.getByRole("navigation").getByRole("link", { name: "Agents" }).click();
  await page.getByRole("heading", { name: "Agents" }).waitFor();
  await page.getByRole("link", { name: "w", exact: true }).waitFor();
  await page.getByRole("cell", { name: /100% of 2 runs/ }).getByText("current").waitFor();
  await shot("agents");
  say({ check: "agents listed, with their latest evals" });

  if (problems.length) throw new Error("the page reported: " + problems.join(" | "));
  say({ ok: true });
} catch (e) {
  say({ error: String(e && e.stack || e), problems });
  process.exitCode = 1;
} finally {
  await browser.close();
}
