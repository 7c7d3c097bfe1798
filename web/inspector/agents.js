// The project's agents: the version each runs, the error of an edit that
// broke one, and a reload that reads agents/ again now.
import { api } from "/ui/api.js";
import { h, fill, json, time } from "/ui/dom.js";

export async function agentsPage({ main }) {
  const rows = h("tbody");
  const report = h("div", { "aria-live": "polite" });
  const reload = h("button", { type: "button", text: "Reload agents", onclick: async () => {
    reload.disabled = true;
    try {
      fill(report, h("h2", { text: "Reload" }), h("pre", { text: json(await api("POST", "/v1/reload", {})) }));
      await load();
    } catch (e) {
      fill(report, h("p", { class: "error", role: "alert", text: `Not reloaded: ${e.message}` }));
    } finally {
      reload.disabled = false;
    }
  } });
  fill(main, h("h1", { text: "Agents" }), h("div", { class: "row" }, reload),
    h("table", {}, h("thead", {}, h("tr", {}, ["Agent", "Version", "Problem", "Latest evals"].map((t) => h("th", { scope: "col", text: t })))), rows),
    report);

  async function load() {
    const { agents } = await api("GET", "/v1/agents");
    fill(rows, agents.map((a) => h("tr", { class: a.error ? "broken" : "" },
      h("td", {}, h("a", { href: `#/threads?agent=${encodeURIComponent(a.name)}`, text: a.name })),
      h("td", {}, h("code", { text: a.version || "" })),
      h("td", { class: a.error ? "error" : "", text: a.error || "" }),
      h("td", {}, (a.evals || []).length ? h("ul", { class: "evals" }, a.evals.map((r) => h("li", {},
        h("code", { text: r.version }), ` ${Math.round(100 * r.pass_rate)}% of ${r.runs} runs`,
        r.flaky ? `, ${r.flaky} flaky` : "", h("span", { class: "meta", text: ` · ${time(r.at)}` }),
        r.version === a.version ? h("span", { class: "badge done", text: "current" }) : null))) : ""))));
  }
  await load();
}
