import { defineConfig } from "vitest/config";

// Each test builds its own jsdom window (test/helpers.js), so the runner itself stays on node.
export default defineConfig({
  test: { environment: "node", include: ["test/**/*.test.js"], testTimeout: 10000 },
});
