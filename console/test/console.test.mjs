// Browser test of the operator console against a running gateway on its simulator.
//
// Run by .ci/run: `node test/console.test.mjs` with GATEWAY_URL and MASTER_KEY set (the gateway
// prices the simulator through SPARK_PRICES_FILE so that spend shows), SCREENSHOTS the folder
// for the page screenshots, CHROMIUM the browser (default /usr/bin/chromium), and SSO_SECRET,
// SSO_ISSUER, SSO_AUDIENCE for an HS256 issuer whose admin group is spark-admins. It signs in,
// issues a key, copies it, calls generate with it, finds the call in usage and spend, edits its
// budget, revokes the key, sees the next call refused, resets a circuit, finds both actions in the audit page,
// checks every page with axe-core, signs out, and signs in again with an admin group's JWT. Exits non-zero at the first failure.

import assert from "node:assert/strict";
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const BASE = (process.env.GATEWAY_URL || "").replace(/\/$/, "");
const MASTER = process.env.MASTER_KEY || "";
const SHOTS = process.env.SCREENSHOTS || "screenshots";
assert.ok(BASE && MASTER, "set GATEWAY_URL and MASTER_KEY");
mkdirSync(SHOTS, { recursive: true });
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // Chromium's own background traffic would be refused by a closed network: turned off.
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const failures = [];
try {
  await run();
} catch (e) {
  failures.push(e);
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures[0]);
  process.exit(1);
}
console.log("console browser test: all checks passed");

// An HS256 JWT of the SSO_ISSUER issuer for a member of its admin group, as a platform signs it.
function adminToken() {
  const b64 = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const now = Math.floor(Date.now() / 1000);
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({
    iss: process.env.SSO_ISSUER, aud: process.env.SSO_AUDIENCE, sub: "console_admin",
    groups: ["spark-admins"], iat: now, exp: now + 300,
  });
  const mac = createHmac("sha256", process.env.SSO_SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${mac}`;
}

async function generate(key, prompt) {
  const resp = await fetch(`${BASE}/api/spark/generate`, {
    method: "POST",
    headers: { "X-API-Key": key, "Content-Type": "application/json" },
    body: JSON.stringify({ prompt, engine: "unity" }),
  });
  return resp.status;
}

async function until(what, check, seconds = 15) {
  const end = Date.now() + seconds * 1000;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

async function run() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });
  const page = await context.newPage();
  const problems = [];
  const urls = [];
  page.on("console", (m) => {
    // The refused sign-in's 401 is logged by the browser itself; anything else is a problem.
    if (m.type() === "error" && !/status of 401/.test(m.text())) problems.push(m.text());
  });
  page.on("pageerror", (e) => problems.push(String(e)));
  page.on("request", (r) => urls.push(r.url()));
  page.on("dialog", (d) => d.accept());

  const goto = async (name) => {
    await page.click(`#nav a[data-page="${name}"]`);
    await page.waitForSelector(`#page-${name}:not([hidden])`);
  };
  const axe = async (name) => {
    // Evaluated through the DevTools protocol, so the page's CSP (which forbids inline and
    // injected scripts) stays in force for the page itself.
    await page.evaluate(axeSource);
    const result = await page.evaluate(async () =>
      // eslint-disable-next-line no-undef
      axe.run(document, { resultTypes: ["violations"] }));
    const serious = result.violations.filter((v) => ["serious", "critical"].includes(v.impact));
    assert.deepEqual(serious.map((v) => `${v.id}: ${v.help} (${v.nodes.length})`), [],
      `${name}: serious accessibility violations`);
    console.log(`${name}: axe-core ${result.violations.length} violations, none serious`);
  };
  const shot = (name) => page.screenshot({ path: `${SHOTS}/${name}.png`, fullPage: true });

  // A wrong key shows nothing.
  await page.goto(`${BASE}/console`);
  await axe("sign-in");
  await shot("sign-in");
  await page.fill("#key", "master-wrong-wrong-wrong-wrong");
  await page.click("#signin-form button[type=submit]");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("refused"));
  assert.equal(await page.isHidden("#nav"), true, "no navigation after a wrong key");
  assert.equal(await page.locator("#overview-cards > *").count(), 0, "no data after a wrong key");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "a refused key is not kept");

  // Sign in with the master key: the overview.
  await page.fill("#key", MASTER);
  await page.click("#signin-form button[type=submit]");
  await page.waitForSelector("#page-overview:not([hidden])");
  await page.waitForSelector("#overview-cards .card");
  await axe("overview");

  // Keys: create one, the secret shown once, copied.
  await goto("keys");
  await page.click("#create-details summary");
  await page.fill("#c-user", "console_test");
  await page.fill("#c-name", "browser test");
  await page.fill("#c-budget", "5");
  await page.click("#create-form button[type=submit]");
  await page.waitForSelector("#new-key:not([hidden])");
  const secret = await page.inputValue("#new-key-value");
  assert.match(secret, /^sk-spark-/);
  await page.click("#copy-key");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("copied"));
  assert.equal(await page.evaluate(() => navigator.clipboard.readText()), secret, "copy button");
  await page.waitForSelector("#keys-rows tr:has-text('console_test')");
  await axe("keys");

  // Use it from outside the browser, then find the calls in usage and in the key's spend.
  for (const thing of ["door that opens", "health bar", "enemy spawner", "inventory grid"]) {
    assert.equal(await generate(secret, `Create a Unity ${thing}`), 200);
  }
  await page.click("#hide-key");
  await goto("usage");
  await page.selectOption("#u-group", "user");
  // The ledger is written behind the requests, possibly one flush per call: wait for all four
  // rather than for the first row to appear.
  await until("the four calls in usage", async () => {
    await page.click("#usage-form button[type=submit]");
    await page.waitForTimeout(300);
    const rows = page.locator("#usage-rows tr:has-text('console_test')");
    return (await rows.count()) === 1 && (await rows.locator("td").nth(1).innerText()) === "4";
  });
  assert.equal(await page.locator("#usage-cost-chart svg rect").count() >= 1, true, "a chart");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#usage-csv")]);
  const csv = readFileSync(await download.path(), "utf8");
  assert.match(csv, /^group,requests,inputTokens,outputTokens,costUsd/);
  assert.match(csv, /console_test,4,/, "the CSV holds the calls");
  await axe("usage");
  await shot("usage");
  await goto("keys");
  await until("the key's spend", async () => {
    await page.click("#nav a[data-page=overview]");
    await goto("keys");
    const text = await page.locator("#keys-rows tr:has-text('console_test')").innerText();
    const spent = /\$(\d+\.\d+) of \$5\.00/.exec(text);
    return spent !== null && Number(spent[1]) > 0;
  });
  assert.equal(await page.locator("#keys-rows tr:has-text('console_test') meter").count(), 1, "a spend bar");
  await shot("keys");

  // Edit its budget through the dialog.
  await page.click("#keys-rows tr:has-text('console_test') button:has-text('Edit')");
  await page.waitForSelector("#edit-dialog[open]");
  await page.fill("#e-budget", "10");
  await page.click("#edit-save");
  await page.waitForSelector("#keys-rows tr:has-text('console_test'):has-text('of $10.00')");

  // Revoke it: the next call is refused.
  await page.click("#keys-rows tr:has-text('console_test') button.danger");
  await page.waitForSelector("#keys-rows tr:has-text('console_test'):has-text('revoked')");
  await until("the revoked key to be refused", async () => (await generate(secret, "a door")) === 401, 10);

  // Providers: reset the simulator's circuit.
  await goto("providers");
  await page.waitForSelector("#providers-rows tr:has-text('simulator')");
  await page.click("#providers-rows tr:has-text('simulator') button");
  await page.waitForFunction(() => document.getElementById("status").textContent.includes("reset"));
  await axe("providers");
  await shot("providers");

  // Audit: both actions, and the chain verified.
  await goto("audit");
  await until("both actions in the audit trail", async () => {
    await page.click("#audit-form button[type=submit]");
    await page.waitForTimeout(300);
    const text = await page.locator("#audit-rows").innerText();
    return text.includes("key.revoke") && text.includes("breaker.reset");
  });
  assert.match(await page.innerText("#audit-chain"), /verified/);
  await axe("audit");
  await shot("audit");

  // The overview now shows the traffic and the spend.
  await goto("overview");
  await until("live figures", async () => {
    const text = await page.innerText("#overview-cards");
    return /Latency p50\s+\d/.test(text) && !/Spend today\s+\$0\.0000/.test(text);
  });
  await shot("overview");

  // Errors (the revoked key's 401s are grouped there).
  await goto("errors");
  await page.waitForSelector("#errors-totals:not(:empty)");
  await axe("errors");
  await shot("errors");

  // A phone's width: nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  for (const name of ["overview", "keys", "usage"]) {
    await goto(name);
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 1, `${name} is ${overflow}px wider than a phone`);
  }
  await shot("keys-phone");
  await page.setViewportSize({ width: 1280, height: 900 });

  // Sign out: the key is forgotten and the data gone.
  await page.click("#signout");
  await page.waitForSelector("#signin:not([hidden])");
  assert.equal(await page.evaluate(() => sessionStorage.length), 0, "signed out: no key kept");
  assert.equal(await page.locator("#keys-rows > *").count(), 0, "signed out: no data left");

  // A member of an identity provider's admin group signs in with its token as well.
  const jwt = process.env.SSO_SECRET ? adminToken() : null;
  if (jwt) {
    await page.fill("#key", jwt);
    await page.click("#signin-form button[type=submit]");
    await page.waitForSelector("#nav:not([hidden])");
    await goto("overview");
    await page.waitForSelector("#overview-cards .card");
    await page.click("#signout");
    await page.waitForSelector("#signin:not([hidden])");
    console.log("an admin group's JWT signs in");
  }

  // No secret ever in a URL, and no CSP violation or script error on any page.
  for (const u of urls) {
    assert.ok(!u.includes(MASTER) && !u.includes(secret) && !(jwt && u.includes(jwt)),
      `a secret in a URL: ${u}`);
  }
  assert.deepEqual(problems, [], "console errors (CSP violations included)");
  console.log(`${urls.length} requests, none with a secret in its URL`);
  await context.close();
}
