import { JSDOM } from "jsdom";
import { afterEach, describe, expect, it, vi } from "vitest";
import { stepUp } from "../src/stepup.js";
import { makePage, parseValue, tick, until, zeroBits } from "./helpers.js";

const TOKEN = "s1.kid00001.1732352026000.nonceS.10.pk_test.b3JpZ2lu.L2NvbnRhY3Q.1732352020000.macS";
const ANSWER = { error: { code: "step_up_required", message: "…" },
                 stepUp: { token: TOKEN, pow: { difficulty: 10 }, expiresIn: 1800 } };

let page;
afterEach(() => page && page.win.close());

describe("activelead.stepUp(answer, form): the AJAX side of a 428", () => {
  it("pays the proof-of-work and hands out the field and header for the retry", async () => {
    page = await makePage();
    const form = page.doc.getElementById("contact");
    const out = await page.api.stepUp(ANSWER, form);
    const { token, report } = parseValue(out.token);
    expect(token).toBe(TOKEN);
    expect(zeroBits(`${TOKEN}:${report.n}`)).toBeGreaterThanOrEqual(10);
    expect(report.s).toBeGreaterThanOrEqual(0);
    expect(out.fields).toEqual({ activelead_token: out.token });
    expect(out.headers).toEqual({ "X-Activelead-Token": out.token });
    // new FormData(form) now carries the step-up value, not the first post's
    expect(form.querySelector("input[name=activelead_token]").value).toBe(out.token);
    expect(page.fetch).not.toHaveBeenCalled(); // the challenge came with the 428
  });

  it("takes the stepUp part alone, and works without a form", async () => {
    page = await makePage();
    const out = await page.api.stepUp(ANSWER.stepUp);
    expect(parseValue(out.token).token).toBe(TOKEN);
  });

  it("hands a step-up value out once: the next token() fetches a fresh challenge", async () => {
    page = await makePage();
    const form = page.doc.getElementById("contact");
    const first = await page.api.stepUp(ANSWER, form);
    const next = await page.api.token(form);
    expect(parseValue(next.token).token).not.toBe(parseValue(first.token).token);
    expect(page.fetch).toHaveBeenCalledTimes(1);
  });

  it("goes on without a solution when the time budget runs out", async () => {
    page = await makePage({ attrs: { "data-site": "pk", "data-budget": "50" } });
    const hard = { stepUp: { token: TOKEN, pow: { difficulty: 26 } } };
    const started = Date.now();
    const out = await page.api.stepUp(hard);
    expect(Date.now() - started).toBeLessThan(2000);
    expect(parseValue(out.token).report.n).toBeUndefined();
    expect(page.warnings.join("\n")).toMatch(/Activelead: proof-of-work over its time budget/);
  });

  it.each([[null], [undefined], ["428"], [{}], [{ stepUp: { token: 5 } }], [{ error: { code: "x" } }]])(
    "never rejects or throws on a bad answer (%j)", async (bad) => {
      page = await makePage();
      const errors = [];
      page.win.addEventListener("error", (e) => errors.push(e));
      await expect(page.api.stepUp(bad, page.doc.getElementById("contact")))
        .resolves.toEqual({ token: "", fields: {}, headers: {} });
      expect(page.api("stepUp", bad)).toBeInstanceOf(Object); // through the command form too
      expect(errors).toEqual([]);
      expect(page.warnings.every((w) => w.startsWith("Activelead:"))).toBe(true);
    });
});

// The proxy's interstitial (proxy/interstitial.py), as it serves it.
function interstitial(data, { before } = {}) {
  const json = typeof data == "string" ? data : JSON.stringify(data).replace(/</g, "\\u003c");
  const dom = new JSDOM(`<!doctype html><html><body>
    <p id="activelead-status" role="status">Your browser is confirming this form submission.</p>
    <form id="activelead-stepup" method="post" accept-charset="utf-8"></form>
    <script type="application/json" id="activelead-stepup-data">${json}</script></body></html>`,
  { url: "https://shop.test/contact?src=ad", runScripts: "outside-only" });
  const win = dom.window;
  const sent = [];
  win.HTMLFormElement.prototype.submit = function () { sent.push([...new win.FormData(this)]); };
  const warnings = [];
  win.console.warn = (...a) => warnings.push(a.join(" "));
  if (before) before(win);
  return { win, sent, warnings, status: () => win.document.getElementById("activelead-status").textContent };
}

const DATA = {
  token: TOKEN, difficulty: 8, budget: 10000, field: "activelead_token",
  fields: [["name", "Ada"], ["interest", "chairs"], ["interest", "tables"], ["submit", "Send"],
           ["message", 'a "quoted" </script><b>x</b>\r\nline 2 \u0000 \u00e9\u4e2d\ud83d\ude00']],
  report: { k: 31, p: 120, c: 2, v: 0, f: 3, i: 900, d: 600, u: 0, w: 0, h: 0 },
};

describe("the step-up page's script", () => {
  it("pays the work and posts the same fields again, in order, with the token", async () => {
    const p = interstitial(DATA);
    await expect(stepUp(p.win)).resolves.toBe(true);
    expect(p.sent).toHaveLength(1);
    const sent = p.sent[0];
    expect(sent.slice(0, 5)).toEqual(DATA.fields); // repeats, odd names and odd values kept
    const [name, value] = sent[5];
    expect(name).toBe("activelead_token");
    const { token, report } = parseValue(value);
    expect(token).toBe(TOKEN);
    expect(zeroBits(`${TOKEN}:${report.n}`)).toBeGreaterThanOrEqual(8);
    expect(report).toMatchObject({ k: 31, p: 120, f: 3, i: 900, w: 0 }); // the first post's report
    expect(p.status()).toMatch(/Sending/);
    p.win.close();
  });

  it("adds this page's own automation markers to the report", async () => {
    const p = interstitial(DATA, { before: (win) => {
      Object.defineProperty(win.navigator, "webdriver", { get: () => true });
      win.callPhantom = () => 0;
    } });
    await stepUp(p.win);
    const { report } = parseValue(p.sent[0].at(-1)[1]);
    expect(report.w).toBe(1);
    expect(report.h & 1).toBe(1);
    p.win.close();
  });

  it.each([
    ["no JSON at all", "not json"],
    ["no token", JSON.stringify({ ...DATA, token: undefined })],
    ["fields not a list", JSON.stringify({ ...DATA, fields: "x" })],
  ])("says what to do and posts nothing with broken data (%s)", async (_, data) => {
    const p = interstitial(data);
    await expect(stepUp(p.win)).resolves.toBe(false);
    expect(p.sent).toEqual([]);
    expect(p.status()).toMatch(/go back and send the form again/);
    expect(p.warnings[0]).toMatch(/^Activelead: /);
    p.win.close();
  });

  it("posts nothing when the work does not finish within its budget", async () => {
    const p = interstitial({ ...DATA, difficulty: 26, budget: 50 });
    await expect(stepUp(p.win)).resolves.toBe(false);
    expect(p.sent).toEqual([]);
    expect(p.status()).toMatch(/could not finish/);
    p.win.close();
  });
});
