import { JSDOM } from "jsdom";
import { createHash } from "node:crypto";
import { vi } from "vitest";
import { install } from "../src/core.js";

export const PAGE = `<!doctype html><html><body>
<form id="contact" method="post" action="/contact">
  <input name="email"><textarea name="message"></textarea>
  <button name="send" value="yes">Send</button>
</form>
<form id="search" method="get" action="/search"><input name="q"></form>
<form id="marked" data-activelead action="/ajax"><input name="x"></form>
<form id="off" method="post" action="/off" data-activelead="off"><input name="y"></form>
</body></html>`;

// The challenge endpoint is the one boundary faked here (the real one is tested from Python
// and end to end in Chromium): it answers like activelead/snippet_http.py.
export function fakeServer({ difficulty = 0, expiresIn = 1800, fail = null } = {}) {
  let n = 0;
  const fetch = vi.fn(async (url, init) => {
    n += 1;
    if (fail === "network") throw new TypeError("Failed to fetch");
    if (fail === "hang") {
      return new Promise((_, reject) => init.signal.addEventListener("abort", () => reject(new Error("aborted"))));
    }
    if (typeof fail === "number") return { ok: false, status: fail, json: async () => ({}) };
    const token = `c1.kid00001.${Date.now()}.nonce${n}.${difficulty}.pk_test.b3JpZ2lu.Zm9ybQ.mac${n}`;
    return { ok: true, status: 200, json: async () => ({ token, pow: difficulty ? { difficulty } : null, expiresIn }) };
  });
  return fetch;
}

export async function makePage({ html = PAGE, attrs = { "data-site": "pk_test" }, fetch = fakeServer(), before } = {}) {
  const dom = new JSDOM(html, { url: "https://shop.test/contact-page", pretendToBeVisual: true, runScripts: "outside-only" });
  const win = dom.window;
  win.fetch = fetch;
  const warnings = [];
  win.console.warn = (...args) => warnings.push(args.join(" "));
  const script = win.document.createElement("script");
  script.src = "https://shop.test/__activelead/activelead.js";
  for (const [k, v] of Object.entries(attrs)) script.setAttribute(k, v);
  if (before) before(win);
  const api = install(win, script);
  // Navigation is not what these tests are about: record submits the page would send.
  const sent = [];
  win.addEventListener("submit", (e) => {
    if (!e.defaultPrevented) sent.push(Object.fromEntries(new win.FormData(e.target, e.submitter)));
    e.preventDefault();
  });
  if (win.document.readyState == "loading") await new Promise((r) => win.document.addEventListener("DOMContentLoaded", r));
  return { dom, win, doc: win.document, api, fetch, warnings, sent };
}

export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

export async function until(cond, ms = 3000) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await tick(5);
  }
}

export function parseValue(value) {
  const [token, report] = value.split("~");
  return { token, report: Object.fromEntries(report.split(",").map((kv) => kv.split("=")).map(([k, v]) => [k, +v])) };
}

export function zeroBits(text) {
  const digest = createHash("sha256").update(text).digest();
  let bits = 0;
  for (const byte of digest) {
    if (byte) return bits + Math.clz32(byte) - 24;
    bits += 8;
  }
  return bits;
}

export function fire(win, el, type, init = {}) {
  const Ctor = type.startsWith("key") ? win.KeyboardEvent : type.startsWith("focus") ? win.FocusEvent : win.Event;
  el.dispatchEvent(new Ctor(type, { bubbles: true, cancelable: true, ...init }));
}
