import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { solver } from "../src/solver.js";
import { zeroBits } from "./helpers.js";

const s = solver();
const hex = (words) => Array.from(words, (w) => (w >>> 0).toString(16).padStart(8, "0")).join("");

describe("sha-256", () => {
  // Lengths around the padding edges (55/56, 63/64/65) and a challenge-sized message.
  it.each([0, 1, 3, 55, 56, 63, 64, 65, 119, 120, 150, 300])("matches node:crypto for %i bytes", (n) => {
    const msg = Array.from({ length: n }, (_, i) => String.fromCharCode(33 + ((i * 7) % 90))).join("");
    expect(hex(s.digest(msg))).toBe(createHash("sha256").update(msg).digest("hex"));
  });
});

describe("proof-of-work search", () => {
  const prefix = "c1.abcd1234.1732352026000.AbCdEfGhIjKl.8.pk_test.aHR0cHM6Ly9zaG9wLnRlc3Q.L2NvbnRhY3Q.mac:";
  it.each([0, 1, 4, 8, 12])("finds the first solution at difficulty %i", (d) => {
    const n = s.search(prefix, d, 0, 1e6);
    expect(n).toBeGreaterThanOrEqual(0);
    expect(zeroBits(prefix + n)).toBeGreaterThanOrEqual(d);
    for (let m = 0; m < n; m++) expect(zeroBits(prefix + m)).toBeLessThan(d);
  });

  it("works for prefixes whose tail spills into a second block", () => {
    for (let len = 40; len < 70; len++) {
      const p = "x".repeat(len) + ":";
      const n = s.search(p, 6, 0, 1e5);
      expect(zeroBits(p + n)).toBeGreaterThanOrEqual(6);
    }
  });

  it.each([0, 7, 95, 990, 9990, 99995])("counts on correctly from %i, across new digits", (from) => {
    const p = "c1.prefix-of-some-length:";
    let expected = from;
    while (zeroBits(p + expected) < 7) expected++;
    expect(s.search(p, 7, from, from + 100000)).toBe(expected);
  });

  it("gives up at the end of its range", () => {
    expect(s.search(prefix, 26, 0, 10)).toBe(-1);
  });
});
