// The seed's Node program (tests/sdk/image.mjs) through rethread started from the installed npm
// package with start(). Usage: node start_image.mjs FAKE_URL IMAGE_MJS
import { spawnSync } from "node:child_process";
import { start } from "rethread";

const [fake, program] = process.argv.slice(2);
const proxy = await start({ upstream: fake, fallbackRetries: 0 });
const run = spawnSync(process.execPath, [program], {
  stdio: "inherit",
  env: { ...process.env, OPENAI_BASE_URL: proxy.baseURL, OPENAI_API_KEY: "sk-package-check" },
});
await proxy.stop();
process.exit(run.status ?? 1);
