// SHA-256 proof-of-work search. `solver` must stay self-contained (no outer references): its
// source text is also what runs inside the Web Worker (see pow.js).
export function solver() {
  var K = [], H = [], c = 2, i = 0, j;
  var frac = function (x) { return ((x - Math.floor(x)) * 4294967296) | 0; };
  // The constants are the fractional parts of the square / cube roots of the first primes.
  while (i < 64) {
    for (j = 2; j * j <= c && c % j; j++);
    if (j * j > c) {
      if (i < 8) H[i] = frac(Math.pow(c, 1 / 2));
      K[i++] = frac(Math.pow(c, 1 / 3));
    }
    c++;
  }
  var W = new Int32Array(64);
  function compress(s, buf, o) {
    for (j = 0; j < 16; j++, o += 4) W[j] = buf[o] << 24 | buf[o + 1] << 16 | buf[o + 2] << 8 | buf[o + 3];
    for (j = 16; j < 64; j++) {
      var x = W[j - 15], y = W[j - 2];
      W[j] = ((x >>> 7 | x << 25) ^ (x >>> 18 | x << 14) ^ x >>> 3) + W[j - 16] +
        ((y >>> 17 | y << 15) ^ (y >>> 19 | y << 13) ^ y >>> 10) + W[j - 7] | 0;
    }
    var a = s[0], b = s[1], cc = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    for (j = 0; j < 64; j++) {
      var t1 = h + ((e >>> 6 | e << 26) ^ (e >>> 11 | e << 21) ^ (e >>> 25 | e << 7)) +
        (e & f ^ ~e & g) + K[j] + W[j] | 0;
      var t2 = ((a >>> 2 | a << 30) ^ (a >>> 13 | a << 19) ^ (a >>> 22 | a << 10)) +
        (a & b ^ a & cc ^ b & cc) | 0;
      h = g; g = f; f = e; e = d + t1 | 0; d = cc; cc = b; b = a; a = t1 + t2 | 0;
    }
    s[0] += a; s[1] += b; s[2] += cc; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
  }
  function bytes(str) {
    for (var out = new Uint8Array(str.length), k = 0; k < str.length; k++) out[k] = str.charCodeAt(k);
    return out;
  }
  // digest(str) -> Int32Array(8): used by the tests to check the implementation.
  // search(prefix, difficulty, from, to) -> the first n in [from, to) such that
  // SHA-256(prefix + n) starts with `difficulty` zero bits, or -1.
  function search(prefix, diff, from, to) {
    var p = bytes(prefix), full = p.length & ~63, start = p.length - full, mid = Int32Array.from(H);
    var st = new Int32Array(8), buf = new Uint8Array(128), limit = Math.pow(2, 32 - diff);
    var n = from, k, len, blocks;
    // The prefix's full blocks never change: hash them once (the "midstate").
    for (k = 0; k < full; k += 64) compress(mid, p, k);
    var layout = function () {
      var digits = "" + n, bits = (p.length + digits.length) * 8, end;
      buf.fill(0);
      buf.set(p.subarray(full));
      for (len = start, k = 0; k < digits.length; k++) buf[len++] = digits.charCodeAt(k);
      buf[len] = 128;
      blocks = len + 9 > 64 ? 2 : 1;
      end = blocks * 64;
      buf[end - 4] = bits >>> 24; buf[end - 3] = bits >>> 16; buf[end - 2] = bits >>> 8; buf[end - 1] = bits;
    };
    if (n >= to) return -1;
    layout();
    for (;;) {
      st.set(mid);
      for (k = 0; k < blocks; k++) compress(st, buf, k * 64);
      if (st[0] >>> 0 < limit) return n;
      if (++n >= to) return -1;
      // Count on in the buffer's ASCII digits; only a new digit (999 -> 1000) re-lays it out.
      for (k = len - 1; k >= start && buf[k] == 57; k--) buf[k] = 48;
      if (k < start) layout();
      else buf[k]++;
    }
  }
  function digest(str) {
    var p = bytes(str), n = p.length, padded = new Uint8Array((n + 72) & ~63), st = Int32Array.from(H);
    padded.set(p);
    padded[n] = 128;
    padded[padded.length - 4] = n * 8 >>> 24; padded[padded.length - 3] = n * 8 >>> 16;
    padded[padded.length - 2] = n * 8 >>> 8; padded[padded.length - 1] = n * 8;
    for (var o = 0; o < padded.length; o += 64) compress(st, padded, o);
    return st;
  }
  return { search: search, digest: digest };
}
