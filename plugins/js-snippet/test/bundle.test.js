import { buildSync } from "esbuild";
import { JSDOM } from "jsdom";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";
import { PAGE } from "./helpers.js";

// The same options as build.mjs, in memory: what the proxy serves.
const built = (entry) => buildSync({
  entryPoints: [fileURLToPath(new URL(`../src/${entry}`, import.meta.url))],
  bundle: true, minify: true, format: "iife", target: ["es2020"], legalComments: "none",
  charset: "ascii", write: false,
}).outputFiles[0].text;
const code = built("index.js");
const stepupCode = built("stepup-entry.js");

function load(html, attrs) {
  const dom = new JSDOM(html, { url: "https://shop.test/p", runScripts: "dangerously" });
  const before = new Set(Object.keys(dom.window));
  const el = dom.window.document.createElement("script");
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  el.textContent = code;
  dom.window.document.body.appendChild(el);
  return { win: dom.window, added: Object.keys(dom.window).filter((k) => !before.has(k)) };
}

describe("the built file", () => {
  it("is under 4 KB minified and gzipped", () => {
    expect(gzipSync(code, { level: 9 }).length).toBeLessThan(4096);
  });

  it("adds no global but window.activelead and reads its config from its own tag", async () => {
    const { win, added } = load(PAGE, { "data-site": "pk_x", "data-endpoint": "https://shop.test/c" });
    await new Promise((r) => setTimeout(r, 50)); // DOMContentLoaded
    expect(added).toEqual(["activelead"]);
    expect(win.activelead.v).toBe(1);
    expect(win.activelead.config().site).toBe("pk_x");
    expect(win.document.querySelector("#contact input[name=activelead_token]")).not.toBeNull();
  });

  it("runs the queue stub's calls and keeps working as the same function", () => {
    const html = `<script>window.activelead=window.activelead||function(){(window.activelead.q=window.activelead.q||[]).push(arguments)};
      activelead("config", {scope: "marked"});</script>` + PAGE;
    const { win } = load(html, { "data-site": "pk_x" });
    expect(win.activelead.config().scope).toBe("marked");
    expect(typeof win.activelead.token).toBe("function");
  });

  it("never throws into the page, even without fetch or a script tag", async () => {
    const dom = new JSDOM(PAGE, { url: "https://shop.test/p", runScripts: "dangerously" });
    const errors = [];
    dom.window.addEventListener("error", (e) => errors.push(e.message));
    dom.window.eval(code); // no currentScript: defaults, no site key
    const warned = [];
    dom.window.console.warn = (...a) => warned.push(a.join(" "));
    dom.window.document.getElementById("contact").requestSubmit();
    await new Promise((r) => setTimeout(r, 50));
    expect(errors).toEqual([]);
    expect(warned.join()).toMatch(/^Activelead: /);
  });
});

describe("the built step-up script", () => {
  it("is under its 4 KB budget and adds no global", async () => {
    expect(gzipSync(stepupCode, { level: 9 }).length).toBeLessThan(4096);
    const data = { token: "s1.k.1.n.4.pk.b.c.1.m", difficulty: 4, fields: [["a", "1"]], report: {} };
    const dom = new JSDOM(`<form id="activelead-stepup" method="post"></form>
      <script type="application/json" id="activelead-stepup-data">${JSON.stringify(data)}</script>`,
    { url: "https://shop.test/contact", runScripts: "dangerously" });
    const sent = [];
    dom.window.HTMLFormElement.prototype.submit = function () { sent.push([...new dom.window.FormData(this)]); };
    const before = new Set(Object.keys(dom.window));
    dom.window.eval(stepupCode);
    await new Promise((r) => { const t = setInterval(() => { if (sent.length) { clearInterval(t); r(); } }, 5); });
    expect(Object.keys(dom.window).filter((k) => !before.has(k))).toEqual([]);
    expect(sent[0][0]).toEqual(["a", "1"]);
    expect(sent[0][1][1]).toMatch(/^s1\..*~w=0,h=\d+,n=\d+,s=\d+$/);
  });
});
