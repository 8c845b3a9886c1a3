import { afterEach, describe, expect, it, vi } from "vitest";
import { fakeServer, fire, makePage, parseValue, tick, until, zeroBits } from "./helpers.js";

let page;
afterEach(() => page && page.win.close());

const field = (form) => form.querySelector("input[name=activelead_token]");

describe("attaching", () => {
  it("adds one hidden token field to POST forms and marked forms only", async () => {
    page = await makePage();
    const { doc } = page;
    expect(field(doc.getElementById("contact")).type).toBe("hidden");
    expect(field(doc.getElementById("marked"))).not.toBeNull();
    expect(field(doc.getElementById("search"))).toBeNull();
    expect(field(doc.getElementById("off"))).toBeNull();
    expect(field(doc.getElementById("contact")).value).toBe(""); // cached HTML carries no token
    expect(page.fetch).not.toHaveBeenCalled();
  });

  it('protects only form[data-activelead] with data-scope="marked"', async () => {
    page = await makePage({ attrs: { "data-site": "pk_test", "data-scope": "marked" } });
    expect(field(page.doc.getElementById("contact"))).toBeNull();
    expect(field(page.doc.getElementById("marked"))).not.toBeNull();
  });

  it("does not bind twice when the tag is on the page twice", async () => {
    page = await makePage();
    const { install } = await import("../src/core.js");
    const again = install(page.win, null);
    expect(again).toBe(page.api);
    fire(page.win, page.doc.querySelector("#contact [name=email]"), "focusin");
    await tick(10);
    expect(page.fetch).toHaveBeenCalledTimes(1);
    expect(page.doc.querySelectorAll("#contact input[name=activelead_token]")).toHaveLength(1);
  });

  it("keeps a token field the page already has", async () => {
    page = await makePage({ html: '<form method="post"><input type="hidden" name="activelead_token" id="mine"></form>' });
    expect(page.doc.querySelectorAll("input[name=activelead_token]")).toHaveLength(1);
    expect(page.doc.getElementById("mine")).not.toBeNull();
  });
});

describe("challenge on first interaction", () => {
  it("asks once, without cookies, for this site and form", async () => {
    page = await makePage();
    const email = page.doc.querySelector("#contact [name=email]");
    fire(page.win, email, "focusin");
    fire(page.win, email, "keydown");
    fire(page.win, email, "input");
    await until(() => field(page.doc.getElementById("contact")).value !== "");
    expect(page.fetch).toHaveBeenCalledTimes(1);
    const [url, init] = page.fetch.mock.calls[0];
    expect(url).toBe("https://shop.test/__activelead/challenge");
    expect(init.credentials).toBe("omit");
    expect(init.method).toBe("POST");
    expect(init.headers["Content-Type"]).toBe("text/plain"); // a simple request: no preflight
    expect(JSON.parse(init.body)).toEqual({ site: "pk_test", form: "/contact" });
    expect(page.doc.cookie).toBe("");
  });

  it("names the form by data-activelead-form when given", async () => {
    page = await makePage({ html: '<form method="post" action="/x" data-activelead-form="newsletter"><input name="a"></form>' });
    fire(page.win, page.doc.querySelector("[name=a]"), "focusin");
    await until(() => page.fetch.mock.calls.length === 1);
    expect(JSON.parse(page.fetch.mock.calls[0][1].body).form).toBe("newsletter");
  });

  it("uses data-endpoint over the script's own address", async () => {
    page = await makePage({ attrs: { "data-site": "pk_a", "data-endpoint": "https://api.test/__activelead/challenge" } });
    fire(page.win, page.doc.querySelector("#contact [name=email]"), "focusin");
    await until(() => page.fetch.mock.calls.length === 1);
    expect(page.fetch.mock.calls[0][0]).toBe("https://api.test/__activelead/challenge");
  });

  it("ignores interaction with unprotected forms", async () => {
    page = await makePage();
    fire(page.win, page.doc.querySelector("#search [name=q]"), "focusin");
    fire(page.win, page.doc.querySelector("#off [name=y]"), "input");
    await tick(10);
    expect(page.fetch).not.toHaveBeenCalled();
  });
});

describe("submitting", () => {
  it("sends the token and a behaviour summary with a classic submit", async () => {
    page = await makePage();
    const form = page.doc.getElementById("contact");
    const email = form.querySelector("[name=email]");
    fire(page.win, email, "focusin");
    for (let i = 0; i < 5; i++) fire(page.win, email, "keydown");
    fire(page.win, email, "paste");
    fire(page.win, page.doc.body, "pointermove");
    fire(page.win, form.querySelector("[name=message]"), "focusin");
    await until(() => field(form).value !== "");
    await tick(20);
    form.requestSubmit(form.querySelector("button"));
    expect(page.sent).toHaveLength(1); // not held: it went at once
    const sent = page.sent[0];
    expect(sent.send).toBe("yes"); // the submitter's value is kept
    const { token, report } = parseValue(sent.activelead_token);
    expect(token).toMatch(/^c1\./);
    expect(report).toMatchObject({ k: 5, v: 1, f: 2, p: 1, w: 0 });
    expect(report.d).toBeGreaterThanOrEqual(20);
    expect(report.u).toBe(6); // jsdom events are synthetic (isTrusted false): reported, never hidden
    expect(report.h & 32).toBe(32);
    expect(report.n).toBeUndefined();
  });

  it("holds a submit without prior interaction until the challenge is there", async () => {
    page = await makePage();
    const form = page.doc.getElementById("contact");
    form.requestSubmit(form.querySelector("button"));
    expect(page.sent).toHaveLength(0);
    await until(() => page.sent.length === 1);
    expect(page.sent[0].send).toBe("yes");
    const { report } = parseValue(page.sent[0].activelead_token);
    expect(report.k).toBe(0);
    expect(report.d).toBeLessThan(1000);
  });

  it("still submits, without a token, when the endpoint is unreachable", async () => {
    const onError = vi.fn();
    page = await makePage({ fetch: fakeServer({ fail: "network" }) });
    page.api.config({ onError });
    const form = page.doc.getElementById("contact");
    form.requestSubmit();
    await until(() => page.sent.length === 1);
    expect(page.sent[0].activelead_token).toBe("");
    expect(onError).toHaveBeenCalledTimes(1);
    expect(page.warnings.join("\n")).toMatch(/^Activelead: Failed to fetch/);
  });

  it.each([403, 500])("still submits when the endpoint answers %i", async (status) => {
    page = await makePage({ fetch: fakeServer({ fail: status }) });
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1);
    expect(page.sent[0].activelead_token).toBe("");
  });

  it("gives up on a hanging endpoint after data-timeout", async () => {
    page = await makePage({ fetch: fakeServer({ fail: "hang" }), attrs: { "data-site": "pk", "data-timeout": "100" } });
    const started = Date.now();
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1);
    expect(Date.now() - started).toBeLessThan(1000);
    expect(page.sent[0].activelead_token).toBe("");
  });

  it("uses a fresh challenge for a second submit of the same form (AJAX pages)", async () => {
    page = await makePage();
    const form = page.doc.getElementById("contact");
    fire(page.win, form.querySelector("[name=email]"), "focusin");
    await until(() => field(form).value !== "");
    form.requestSubmit();
    form.requestSubmit();
    await until(() => page.sent.length === 2);
    const [a, b] = page.sent.map((s) => parseValue(s.activelead_token).token);
    expect(a).not.toBe(b);
    expect(page.fetch).toHaveBeenCalledTimes(2);
  });

  it("fetches again when the challenge has expired", async () => {
    page = await makePage({ fetch: fakeServer({ expiresIn: 5 }) }); // expires 5 s - 5 s margin = at once
    const form = page.doc.getElementById("contact");
    fire(page.win, form.querySelector("[name=email]"), "focusin");
    await until(() => page.fetch.mock.calls.length === 1);
    await tick(10);
    form.requestSubmit();
    await until(() => page.sent.length === 1);
    expect(page.fetch).toHaveBeenCalledTimes(2);
  });

  // jsdom fires no "formdata" event; the fresher value it gives is checked in Chromium
  // (tests/snippet/test_browser.py::test_form_submit_and_formdata_carry_the_token).
  it("keeps the hidden field filled for code that reads it directly", async () => {
    page = await makePage();
    const form = page.doc.getElementById("contact");
    fire(page.win, form.querySelector("[name=email]"), "focusin");
    await until(() => field(form).value !== "");
    expect(new page.win.FormData(form).get("activelead_token")).toMatch(/^c1\..*~k=0,/);
  });

  it("reports navigator.webdriver", async () => {
    page = await makePage({ before: (win) => Object.defineProperty(win.navigator, "webdriver", { get: () => true }) });
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1);
    expect(parseValue(page.sent[0].activelead_token).report.w).toBe(1);
  });

  it("reports selenium / chromedriver / phantom markers", async () => {
    page = await makePage({ before: (win) => { win.callPhantom = () => 0; win.cdc_adoQpoasnfa76pfcZLmcfl_Array = []; } });
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1);
    const { h } = parseValue(page.sent[0].activelead_token).report;
    expect(h & 1).toBe(1);
    expect(h & 4).toBe(4);
  });
});

describe("proof-of-work step-up", () => {
  it("solves it when the server asks, before the form goes", async () => {
    const onReady = vi.fn();
    page = await makePage({ fetch: fakeServer({ difficulty: 10 }) });
    page.api.config({ onReady });
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1);
    const { token, report } = parseValue(page.sent[0].activelead_token);
    expect(zeroBits(`${token}:${report.n}`)).toBeGreaterThanOrEqual(10);
    expect(report.s).toBeGreaterThanOrEqual(0);
    expect(onReady).toHaveBeenCalledWith({ token, pow: true }, page.doc.getElementById("contact"));
  });

  it("submits without a solution when the time budget runs out", async () => {
    page = await makePage({ fetch: fakeServer({ difficulty: 26 }), attrs: { "data-site": "pk", "data-budget": "50" } });
    const started = Date.now();
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1, 5000);
    expect(Date.now() - started).toBeLessThan(2000);
    const { report } = parseValue(page.sent[0].activelead_token);
    expect(report.n).toBeUndefined();
    expect(page.warnings.join("\n")).toMatch(/time budget/);
  });
});

describe("the API", () => {
  it("token(form) resolves to the fields and headers to add", async () => {
    page = await makePage();
    const form = page.doc.getElementById("marked");
    const out = await page.api.token(form);
    expect(out.fields.activelead_token).toBe(out.token);
    expect(out.headers["X-Activelead-Token"]).toBe(out.token);
    expect(out.token).toMatch(/^c1\..*~k=0,/);
    expect(JSON.parse(page.fetch.mock.calls[0][1].body).form).toBe("/ajax");
    const second = await page.api.token(form); // a value is handed out once: the next is new
    expect(parseValue(second.token).token).not.toBe(parseValue(out.token).token);
  });

  it("token() without a form names the page, or the form given in options", async () => {
    page = await makePage();
    await page.api.token();
    expect(JSON.parse(page.fetch.mock.calls[0][1].body).form).toBe("/contact-page");
    await page.api.token({ form: "chat" });
    expect(JSON.parse(page.fetch.mock.calls[1][1].body).form).toBe("chat");
  });

  it("token() never rejects", async () => {
    page = await makePage({ fetch: fakeServer({ fail: "network" }) });
    await expect(page.api.token(page.doc.getElementById("contact"))).resolves.toEqual({ token: "", fields: {}, headers: {} });
    await expect(page.api.token("not a form")).resolves.toMatchObject({ token: "" });
  });

  it("protect(form, options) covers an unmarked form and overrides options", async () => {
    page = await makePage({ attrs: { "data-site": "pk_test", "data-scope": "marked" } });
    const form = page.doc.getElementById("contact");
    expect(field(form)).toBeNull();
    const onReady = vi.fn();
    page.api.protect(form, { form: "contact-v2", site: "pk_other", onReady });
    expect(field(form)).not.toBeNull();
    fire(page.win, form.querySelector("[name=email]"), "focusin");
    await until(() => onReady.mock.calls.length === 1);
    expect(JSON.parse(page.fetch.mock.calls[0][1].body)).toEqual({ site: "pk_other", form: "contact-v2" });
  });

  it("runs calls queued by the stub before the script loaded", async () => {
    const onReady = vi.fn();
    page = await makePage({
      attrs: { "data-site": "pk_test", "data-scope": "marked" },
      before: (win) => {
        // the documented stub, as a page would inline it
        win.eval("window.activelead=window.activelead||function(){(window.activelead.q=window.activelead.q||[]).push(arguments)}");
        win.activelead("config", { onReady });
        win.activelead("protect", win.document.getElementById("contact"));
      },
    });
    expect(field(page.doc.getElementById("contact"))).not.toBeNull();
    expect(page.win.activelead).toBe(page.api);
    page.api("token", page.doc.getElementById("contact"));
    await until(() => onReady.mock.calls.length === 1);
  });

  it("never lets an exception reach the page", async () => {
    page = await makePage();
    const errors = [];
    page.win.addEventListener("error", (e) => errors.push(e));
    page.api.config({ onReady: () => { throw new Error("page bug"); } });
    page.api("no-such-command");
    page.api.protect("not a form");
    page.api.config(null);
    fire(page.win, page.doc.querySelector("#contact [name=email]"), "focusin");
    page.doc.getElementById("contact").requestSubmit();
    await until(() => page.sent.length === 1);
    expect(errors).toEqual([]);
    expect(page.warnings.some((w) => w.startsWith("Activelead:") && w.includes("page bug"))).toBe(true);
  });
});
