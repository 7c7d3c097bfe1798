// The inbox: every thread that waits for a person, with the form to
// answer it, oldest wait first as the list gives them.
import { api, keepLive } from "/ui/api.js";
import { h, fill, time } from "/ui/dom.js";
import { actionsFor } from "/ui/actions.js";

export async function inboxPage({ app, main, signal }) {
  const list = h("div", { class: "inbox" });
  fill(main, h("h1", { text: "Inbox" }), h("p", { class: "hint", text: "Threads that wait for a person." }), list);

  // Cards stay as they are while their thread waits for the same thing:
  // a refresh never wipes what a person is typing.
  const cards = new Map(); // thread id and what it waits for -> card
  // One refresh at a time: a live notice and an answer sent may ask for
  // one together.
  const lastSeen = new Map(); // thread id -> { updated_at, key } at the last refresh
  let chain = Promise.resolve();
  const load = () => (chain = chain.then(refresh, refresh));
  async function refresh() {
    const waiting = (await api("GET", "/v1/threads?status=waiting&limit=100")).threads;
    const shown = [];
    for (const row of waiting) {
      if (row.parent) continue; // a sub-agent's wait is answered on its parent
      // A thread unchanged since the last refresh waits for the same thing:
      // only the others are read again.
      const known = lastSeen.get(row.id);
      if (known && known.updated_at === row.updated_at && cards.has(known.key)) {
        shown.push(known.key);
        continue;
      }
      const t = await api("GET", `/v1/threads/${row.id}?events=false`);
      if (t.status !== "waiting" || !t.waiting_for) continue;
      const key = `${t.id} ${JSON.stringify(t.waiting_for)}`;
      lastSeen.set(t.id, { updated_at: row.updated_at, key });
      if (!cards.has(key)) {
        cards.set(key, h("article", { class: "card", "data-thread": t.id },
          h("h2", {}, h("a", { href: `#/threads/${t.id}`, text: t.id }), " ",
            h("span", { class: "meta", text: `${t.agent} · since ${time(t.updated_at)}` })),
          actionsFor(t, load)));
      }
      shown.push(key);
    }
    // Cards that go are removed and new ones put in place; the others are
    // never moved (a card moved loses the focus of the field in it).
    for (const [key, card] of cards) {
      if (!shown.includes(key)) {
        card.remove();
        cards.delete(key);
        lastSeen.delete(key.split(" ")[0]);
      }
    }
    if (!shown.length) {
      fill(list, h("p", { text: "Nobody is waited for." }));
      return;
    }
    list.querySelector(":scope > p")?.remove();
    let next = list.firstElementChild;
    for (const key of shown) {
      const card = cards.get(key);
      if (card === next) next = next.nextElementSibling;
      else list.insertBefore(card, next);
    }
  }

  await load();
  keepLive(app, signal, load);
}
