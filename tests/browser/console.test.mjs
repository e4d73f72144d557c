// The console in a real browser: Debian's chromium driven by playwright-core,
// against `distcron standalone` on a free loopback port with a fresh data
// directory. Walks what an operator does, checks that nothing a user typed
// or a job printed can inject markup, and measures the jobs page with
// 10,000 jobs. Screenshots and figures go to target/browser/.
//
// Run: node tests/browser/console.test.mjs  (scripts/test.sh does, after
// building target/debug/distcron and running `npm ci` here and in webroot/).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.DISTCRON_BIN || join(ROOT, 'target/debug/distcron');
const ARTIFACTS = join(ROOT, 'target/browser');
const XSS = '<img src=x onerror=alert(1)>';
const MANY_JOBS = 10_000;

function freePort() {
  return new Promise((done, fail) => {
    const server = createServer();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => done(port));
    });
  });
}

// Poll `check` until it returns a truthy value, or fail naming `what`.
async function eventually(what, check, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check().catch(() => undefined);
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function startStandalone(dataDir) {
  const port = await freePort();
  const env = { ...process.env, DISTCRON_LOG_LEVEL: 'warn' };
  delete env.DISTCRON_CONFIG;
  const child = spawn(BIN, ['standalone', '--listen', `127.0.0.1:${port}`,
    '--data-dir', dataDir, '--webroot', join(ROOT, 'webroot')], {
    env,
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  const base = `http://127.0.0.1:${port}`;
  await eventually('standalone to be ready', async () => (await fetch(`${base}/readyz`)).ok);
  // No token configured: standalone made an admin token at first start.
  const tokenFile = join(dataDir, 'admin.token');
  await eventually('admin.token', async () => existsSync(tokenFile));
  assert.equal(statSync(tokenFile).mode & 0o777, 0o600, 'admin.token is private');
  assert.equal(statSync(dataDir).mode & 0o777, 0o700, 'the data directory is private');
  const token = readFileSync(tokenFile, 'utf8').trim();
  return { child, base, token };
}

// A page on another origin (another loopback port), as an attacker's page
// the operator visits: it auto-submits a form to the console's API, and
// frames the console.
async function startAttacker(base) {
  const port = await freePort();
  const job = JSON.stringify({ name: 'csrf-attack', command: 'touch /tmp/distcron-csrf-ran', cronExpr: '* * * * * *' });
  const pages = {
    '/form': `<form id="f" method="POST" action="${base}/job/save">` +
      `<input type="hidden" name="job" value='${job}'></form>` +
      '<script>document.getElementById("f").submit()</script>',
    '/frame': `<iframe id="console" src="${base}/"></iframe>`,
  };
  const server = createHttpServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html' });
    res.end(pages[req.url] || '');
  });
  await new Promise((r) => server.listen(port, '127.0.0.1', r));
  return { server, origin: `http://127.0.0.1:${port}` };
}

async function stop(child) {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  await exited;
  clearTimeout(timer);
}

async function saveJobs(base, token, jobs, inFlight = 16) {
  let next = 0;
  async function lane() {
    while (next < jobs.length) {
      const job = jobs[next++];
      const resp = await fetch(`${base}/job/save`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
        body: JSON.stringify(job),
      });
      assert.equal(resp.status, 200, `saving ${job.name}: ${await resp.text()}`);
    }
  }
  await Promise.all(Array.from({ length: inFlight }, lane));
}

async function main() {
  mkdirSync(ARTIFACTS, { recursive: true });
  const dataDir = mkdtempSync(join(tmpdir(), 'distcron-browser-'));
  const { child, base, token } = await startStandalone(dataDir);
  const attacker = await startAttacker(base);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const dialogs = [];
    page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
    const pageErrors = [];
    page.on('pageerror', (e) => pageErrors.push(e.message));
    const shot = (name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true, animations: 'disabled' });
    const row = (name) => page.locator(`#jobs-table tbody tr[data-job="${name}"]`);
    const toastSays = (text) => page.locator('#toasts .toast-body', { hasText: text }).first().waitFor();

    // Sign in: a wrong token is refused with a message, the right one works.
    await page.goto(base + '/');
    await page.locator('#signin-form').waitFor();
    assert.equal(await page.locator('#new-job').isVisible(), false, 'no actions before sign-in');
    assert.equal(await page.locator('#sign-out').isVisible(), false, 'no sign-out before sign-in');
    await shot('sign-in');
    await page.fill('#signin-token', 'dct_0000_0000');
    await page.click('#signin-submit');
    await page.locator('#signin-error', { hasText: 'not valid' }).waitFor();
    await page.fill('#signin-token', token);
    await page.click('#signin-submit');
    await page.locator('#jobs-empty').waitFor();
    assert.match(await page.locator('#whoami').innerText(), /standalone-admin \(admin\)/);
    const cookies = await page.context().cookies();
    const session = cookies.find((c) => c.name === 'distcron_session');
    assert.ok(session && session.httpOnly && session.sameSite === 'Strict', 'an HttpOnly, SameSite=Strict session cookie');
    await page.locator('#overview [data-count="workersAlive"]', { hasText: '1' }).waitFor();

    // Create a job through the form; the schedule is checked as it is typed.
    await page.click('#new-job');
    await page.fill('#f-name', 'hello');
    await page.fill('#f-command', `echo hello-from-distcron; echo '${XSS}'`);
    await page.fill('#f-cronExpr', '61 * * * *');
    await page.locator('#f-cronExpr.is-invalid').waitFor();
    assert.match(await page.locator('[data-error-for="cronExpr"]').innerText(), /61/, 'the error names the bad value');
    await page.fill('#f-cronExpr', '*/2 * * * * * *');
    await page.locator('#preview li').nth(4).waitFor();
    await shot('job-editor');
    await page.click('#job-save');
    await toastSays('Saved hello');
    await row('hello').waitFor();
    assert.match(await row('hello').innerText(), /\*\/2 \* \* \* \* \* \*/);

    // A name the API refuses: the error shows next to the field, as text.
    await page.click('#new-job');
    await page.fill('#f-name', XSS);
    await page.fill('#f-command', 'true');
    await page.fill('#f-cronExpr', '@daily');
    await page.click('#job-save');
    await page.locator('#f-name.is-invalid').waitFor();
    const nameError = await page.locator('[data-error-for="name"]').innerText();
    assert.ok(nameError.length > 0, 'the name error is shown next to the name');
    assert.equal(await page.locator('#job-form img').count(), 0, 'the error text made no <img>');
    await shot('job-editor-error');
    await page.click('#job-editor .btn-close');
    await page.locator('#job-editor').waitFor({ state: 'hidden' });

    // Its runs appear in its log; a run's output is shown as text.
    await row('hello').locator('a').click();
    await page.locator('#runs-table tbody tr.run-row .badge', { hasText: 'succeeded' }).first().waitFor({ timeout: 20_000 });
    await page.locator('#runs-table tbody tr.run-row', { has: page.locator('.badge', { hasText: 'succeeded' }) }).first().click();
    await page.locator('#run-output', { hasText: 'hello-from-distcron' }).waitFor();
    assert.ok((await page.locator('#run-output').innerText()).includes(XSS), 'the output shows the markup as text');
    assert.equal(await page.locator('#run-output img').count(), 0, 'the output made no <img>');
    await shot('run-output');
    await page.click('#run-viewer .btn-close');
    await page.locator('#run-viewer').waitFor({ state: 'hidden' });
    await page.selectOption('#runs-status', 'failed');
    await page.locator('#runs-empty').waitFor();
    await page.selectOption('#runs-status', '');
    await page.locator('#runs-table tbody tr.run-row').first().waitFor();
    await shot('runs');

    // A long job, started now and killed from "Running now".
    await page.click('a[data-view="jobs"]');
    await page.click('#new-job');
    await page.fill('#f-name', 'sleeper');
    await page.fill('#f-command', 'sleep 300');
    await page.fill('#f-cronExpr', '@yearly');
    await page.click('#job-save');
    await toastSays('Saved sleeper');
    await row('sleeper').locator('button[data-action="run"]').click();
    await toastSays('Started sleeper');
    await page.click('a[data-view="running"]');
    const running = page.locator('#running-table tbody tr[data-job="sleeper"]');
    await running.waitFor({ timeout: 20_000 });
    await shot('running');
    await running.locator('button[data-action="kill"]').click();
    await toastSays('Kill sent to sleeper');
    await running.waitFor({ state: 'detached', timeout: 20_000 });
    await page.goto(base + '/#/jobs/sleeper/runs');
    await page.locator('#runs-table .badge', { hasText: 'killed' }).first().waitFor({ timeout: 20_000 });

    // Pause and resume: the definition stays; a paused job has no next run.
    await page.click('a[data-view="jobs"]');
    await row('hello').locator('button[data-action="pause"]').click();
    await toastSays('Paused hello');
    await row('hello').locator('.badge', { hasText: 'paused' }).waitFor();
    await row('hello').locator('button[data-action="resume"]').click();
    await toastSays('Resumed hello');
    await row('hello').locator('.badge', { hasText: 'enabled' }).waitFor();

    // Workers.
    await page.click('a[data-view="workers"]');
    await page.locator('#workers-table tbody tr').first().waitFor();
    await shot('workers');

    // Delete, with confirmation.
    await page.click('a[data-view="jobs"]');
    await row('hello').locator('button[data-action="delete"]').click();
    await page.locator('#confirm', { hasText: 'hello' }).waitFor();
    await page.click('#confirm-ok');
    await toastSays('Deleted hello');
    await row('hello').waitFor({ state: 'detached' });
    await shot('jobs');

    // 10,000 jobs: the first page is rendered soon after the page loads.
    const many = Array.from({ length: MANY_JOBS }, (_, i) => ({
      name: `bulk-${String(i).padStart(5, '0')}`, command: 'true', cronExpr: '@yearly',
    }));
    const saveStart = Date.now();
    await saveJobs(base, token, many);
    const saveSeconds = (Date.now() - saveStart) / 1000;
    const timings = [];
    for (let i = 0; i < 3; i++) {
      await page.goto('about:blank');
      await page.goto(base + '/#/jobs');
      await page.locator('#jobs-range', { hasText: 'of 10,001' }).waitFor();
      timings.push(await page.evaluate(() => performance.getEntriesByName('jobs-rendered')[0].startTime));
    }
    await shot('jobs-10k');
    await page.click('#jobs-next');
    await page.locator('#jobs-range', { hasText: '51–100 of 10,001' }).waitFor();
    await page.fill('#job-search', 'bulk-0999');
    await page.locator('#jobs-range', { hasText: '1–10 of 10' }).waitFor();

    // A page on another origin auto-submits a form to /job/save while the
    // operator is signed in: nothing is stored, so nothing runs.
    const attackPage = await browser.newPage();
    const attackAnswer = attackPage.waitForResponse((r) => r.url() === `${base}/job/save`);
    await attackPage.goto(attacker.origin + '/form');
    assert.equal((await attackAnswer).status(), 403, 'the cross-origin form post is refused');
    const stored = await fetch(`${base}/job/get?name=csrf-attack`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(stored.status, 404, 'the attack stored no job');
    assert.ok(!existsSync('/tmp/distcron-csrf-ran'), 'the attack ran nothing');

    // The console cannot be framed by another page.
    const framed = attackPage.waitForEvent('frameattached');
    await attackPage.goto(attacker.origin + '/frame');
    await framed;
    await attackPage.locator('#console').waitFor();
    await attackPage.waitForLoadState('load');
    assert.equal(await attackPage.frameLocator('#console').locator('#signin-form, #jobs-table').count(), 0,
      'the console did not render inside a frame');
    await attackPage.close();

    // Sign out: back to the sign-in form, and the session no longer works.
    await page.click('#sign-out');
    await page.locator('#signin-form').waitFor();
    const after = await page.evaluate(async () => (await fetch('/auth/me')).status);
    assert.equal(after, 401, 'signed out everywhere');

    assert.deepEqual(dialogs, [], 'no script ran from user or job text');
    assert.deepEqual(pageErrors, [], 'no script errors');
    const firstPageMs = Math.round(Math.min(...timings));
    const report = { jobs: MANY_JOBS + 1, firstPageRenderedMs: timings.map(Math.round), saveSeconds };
    writeFileSync(join(ARTIFACTS, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    console.log(`console: first jobs page rendered in ${firstPageMs} ms with ${MANY_JOBS + 1} jobs ` +
      `(runs: ${report.firstPageRenderedMs.join(', ')} ms); ${MANY_JOBS} jobs saved in ${saveSeconds.toFixed(1)} s`);
    console.log('console: browser test passed; screenshots in target/browser/');
  } finally {
    await browser.close();
    attacker.server.close();
    await stop(child);
    rmSync(dataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error('console: browser test FAILED:', e);
  process.exit(1);
});
