// Builds DOM nodes. Text is always text (textContent), never markup: what
// a model or a tool wrote cannot become script or a link here.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (key === "text") el.textContent = value;
    else if (key in el && typeof value !== "string") el[key] = value;
    else el.setAttribute(key, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

// Replaces what a node holds.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function time(ms) {
  if (!ms) return "";
  return new Date(ms).toLocaleString();
}

export function json(value) {
  return JSON.stringify(value, null, 2);
}

// Long text folded: the first lines shown, the rest a click away.
export function folded(text, lines = 12) {
  const all = String(text);
  const parts = all.split("\n");
  if (parts.length <= lines && all.length <= 1200) return h("pre", { text: all });
  return h("details", { class: "fold" },
    h("summary", { text: `${parts.length} lines, ${all.length} characters` }),
    h("pre", { text: all }));
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, text: status });
}
