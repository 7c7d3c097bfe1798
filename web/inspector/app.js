// The inspector: a page per hash route (#/threads, #/threads/ID, #/inbox,
// #/agents), each a module that draws into <main> and may follow the
// API's event streams until the route changes.
import { api, token, ApiError } from "/ui/api.js";
import { h, fill } from "/ui/dom.js";
import { threadsPage } from "/ui/threads.js";
import { threadPage } from "/ui/thread.js";
import { inboxPage } from "/ui/inbox.js";
import { agentsPage } from "/ui/agents.js";

const main = document.getElementById("main");
const login = document.getElementById("login");
const liveButton = document.getElementById("live");

// What every page gets: whether updates are live, and a way to stop the
// streams it follows when the route changes.
const app = { live: true, controller: null, onLive: null, unauthorized: () => askToken("That token is not this server's.") };

function route() {
  if (app.controller) app.controller.abort();
  app.controller = new AbortController();
  app.onLive = null;
  const hash = location.hash || "#/threads";
  const [, page, id] = hash.split("?")[0].match(/^#\/([a-z]+)\/?(.*)$/) || [];
  // Each route draws into a container of its own: a page still loading
  // when the route changes draws into one nobody sees.
  const ctx = { app, main: h("div"), signal: app.controller.signal };
  fill(main, ctx.main);
  let thread = null;
  try { thread = id ? decodeURIComponent(id) : null; } catch { thread = id; }
  let view;
  if (page === "threads" && thread) view = threadPage(ctx, thread);
  else if (page === "inbox") view = inboxPage(ctx);
  else if (page === "agents") view = agentsPage(ctx);
  else view = threadsPage(ctx);
  for (const a of document.querySelectorAll("nav a")) {
    a.toggleAttribute("aria-current", hash.startsWith(a.getAttribute("href")));
  }
  Promise.resolve(view).catch((e) => failed(e));
}

function failed(e) {
  if (e instanceof ApiError && e.status === 401) return askToken("That token is not this server's.");
  if (e && e.name === "AbortError") return;
  fill(main, h("p", { class: "error", role: "alert", text: `Could not load: ${e.message}` }));
}

function askToken(message) {
  token.clear();
  document.getElementById("token").value = "";
  main.hidden = true;
  login.hidden = false;
  document.getElementById("login-error").textContent = message || "";
  document.getElementById("token").focus();
}

login.addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const given = document.getElementById("token").value.trim();
  token.set(given);
  try {
    await api("GET", "/v1/agents");
  } catch (e) {
    return askToken(e instanceof ApiError && e.status === 401
      ? "That token is not this server's." : `The server did not answer: ${e.message}`);
  }
  document.getElementById("token").value = "";
  login.hidden = true;
  main.hidden = false;
  route();
});

liveButton.addEventListener("click", () => {
  app.live = !app.live;
  liveButton.setAttribute("aria-pressed", String(app.live));
  liveButton.textContent = `Live updates: ${app.live ? "on" : "paused"}`;
  if (app.live && app.onLive) app.onLive();
});

document.getElementById("forget").addEventListener("click", () => askToken(""));
window.addEventListener("hashchange", () => token.get() && route());
window.addEventListener("unhandledrejection", (ev) => failed(ev.reason));

if (token.get()) route();
else askToken("");
