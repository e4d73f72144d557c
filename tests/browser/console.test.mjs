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

// Percentile of sorted `values` (nearest rank).
function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

// Run a job that prints a timestamped line every 100 ms through the API at
// `apiBase`, open its run in the console `page` (signed in on its own
// manager) while it runs, and check the viewer shows output before the run
// ends, then the final status and stored output. Returns, per line, the
// time from the line being printed to it being shown (ms).
async function followLive(page, apiBase, token, label) {
  const name = `live-${label}`;
  const headers = { 'content-type': 'application/json', authorization: `Bearer ${token}` };
  await saveJobs(apiBase, token, [{
    name,
    command: 'for i in $(seq 1 40); do echo "line $i $(date +%s%3N)"; sleep 0.1; done; sleep 1; echo all-done',
    cronExpr: '0 0 1 1 *',
  }]);
  const ran = await fetch(`${apiBase}/job/run`, { method: 'POST', headers, body: JSON.stringify({ name }) });
  assert.equal(ran.status, 200, `running ${name}: ${await ran.text()}`);
  const runId = await eventually(`the ${label} run to start`, async () => {
    const log = await (await fetch(`${apiBase}/job/log?name=${name}&limit=1`, { headers })).json();
    return log.data[0] && log.data[0].run_id;
  });
  await page.evaluate(() => {
    window.liveSeen = {};
    const out = document.getElementById('run-output');
    new MutationObserver(() => {
      for (const m of out.textContent.matchAll(/line (\d+) (\d+)/g)) {
        if (!(m[1] in window.liveSeen)) window.liveSeen[m[1]] = { printed: Number(m[2]), shown: Date.now() };
      }
    }).observe(out, { childList: true, subtree: true, characterData: true });
  });
  // The link a notification carries opens the run.
  await page.evaluate((id) => { location.hash = '#/run/' + encodeURIComponent(id); }, runId);
  await page.locator('#run-output', { hasText: 'line 1 ' }).waitFor();
  const early = await page.locator('#run-output').innerText();
  assert.ok(!early.includes('all-done'), `${label}: output shown before the run ended`);
  assert.ok(await page.locator('#run-live').isVisible(), `${label}: the viewer says it is live`);
  await page.locator('#run-facts .badge', { hasText: 'succeeded' }).waitFor({ timeout: 30_000 });
  await page.locator('#run-output', { hasText: 'all-done' }).waitFor();
  assert.ok(await page.locator('#run-live').isHidden(), `${label}: live ends with the run`);
  const seen = await page.evaluate(() => Object.values(window.liveSeen));
  assert.equal(seen.length, 40, `${label}: every line was shown`);
  // Lines printed before the viewer was following arrive as a backlog:
  // the latency counts the lines printed after the first one was shown.
  const following = Math.min(...seen.map((l) => l.shown));
  const latencies = seen.filter((l) => l.printed >= following).map((l) => l.shown - l.printed);
  assert.ok(latencies.length >= 20, `${label}: most lines printed while followed (${latencies.length})`);
  await page.keyboard.press('Escape');
  await page.locator('#run-viewer').waitFor({ state: 'hidden' });
  return latencies;
}

// One worker and two managers on the test command's etcd and MongoDB-wire
// server (ETCD_ENDPOINTS, MONGODB_URI), under a fresh prefix and database.
async function startCluster(token, dataDir) {
  const etcd = process.env.ETCD_ENDPOINTS;
  const mongo = process.env.MONGODB_URI;
  if (!etcd || !mongo) throw new Error('ETCD_ENDPOINTS and MONGODB_URI are not set: run through scripts/test.sh');
  const stamp = `${Date.now()}`;
  const env = {
    ...process.env,
    DISTCRON_ETCD_ENDPOINTS: etcd, DISTCRON_ETCD_PREFIX: `/browser-${stamp}/`,
    DISTCRON_MONGODB_URI: mongo, DISTCRON_MONGODB_DATABASE: `browser_${stamp}`,
    DISTCRON_ADMIN_TOKEN: token, DISTCRON_DATA_DIR: dataDir, DISTCRON_LOG_LEVEL: 'warn',
    DISTCRON_BATCH_DELAY_MS: '200', DISTCRON_WEBROOT: join(ROOT, 'webroot'),
  };
  delete env.DISTCRON_CONFIG;
  const bin = (name) => join(dirname(BIN), name);
  const children = [];
  const bases = [];
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    children.push(spawn(bin('distcron-manager'), [], { env: { ...env, DISTCRON_LISTEN: `127.0.0.1:${port}` }, stdio: ['ignore', 'inherit', 'inherit'] }));
    bases.push(`http://127.0.0.1:${port}`);
  }
  children.push(spawn(bin('distcron-worker'), [], { env: { ...env, DISTCRON_WORKER_ID: 'browser-w1' }, stdio: ['ignore', 'inherit', 'inherit'] }));
  const headers = { authorization: `Bearer ${token}` };
  for (const base of bases) await eventually(`manager ${base}`, async () => (await fetch(`${base}/readyz`)).ok);
  await eventually('the worker to register', async () =>
    (await (await fetch(`${bases[1]}/worker/info`, { headers })).json()).data.length === 1);
  return { children, bases };
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
    // A static file the console asks for and does not get (the favicon was one).
    const missingFiles = [];
    page.on('response', (r) => {
      if (r.status() === 404 && /\.(svg|ico|png|js|css|map)$/.test(new URL(r.url()).pathname)) missingFiles.push(r.url());
    });
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

    // Charts, chains and a run with parameters (issue L). A job whose
    // runs are known: two succeed, one fails (FAIL=1, given through the
    // "Run…" form for one and the API for the others).
    const headers = { authorization: `Bearer ${token}`, 'content-type': 'application/json' };
    const post = (path, body) => fetch(base + path, { method: 'POST', headers, body: JSON.stringify(body) });
    const finalRuns = async (name) => ((await (await fetch(`${base}/job/log?name=${name}&limit=100`, { headers })).json()).data || [])
      .filter((r) => r.status !== 'started' && r.status !== 'pending');
    assert.equal((await post('/job/save', { name: 'chart-child', command: 'true', cronExpr: '@yearly' })).status, 200);
    assert.equal((await post('/job/save', { name: 'charted', command: 'sleep 0.$(date +%N | cut -c1); test "$FAIL" != 1',
      cronExpr: '@yearly', onSuccess: ['chart-child'] })).status, 200);
    for (const env of [{}, { FAIL: '1' }]) {
      const before = (await finalRuns('charted')).length;
      assert.equal((await post('/job/run', { name: 'charted', env })).status, 200);
      await eventually('a run of charted', async () => (await finalRuns('charted')).length === before + 1);
    }
    await page.click('a[data-view="jobs"]');
    await page.fill('#job-search', 'charted');
    await row('charted').locator('button[data-action="run-params"]').click();
    await page.fill('#run-params-env', 'FAIL=0\nNOTE=from the form');
    await page.click('#run-params-submit');
    await toastSays('Started charted with FAIL, NOTE');
    await eventually('the run from the form', async () => (await finalRuns('charted')).length === 3);
    const fromForm = (await finalRuns('charted'))[0];
    assert.deepEqual(fromForm.params, { FAIL: '0', NOTE: 'from the form' }, 'the record keeps the parameters');
    await page.fill('#job-search', '');
    await page.goto(base + '/#/jobs/charted/runs');
    const bars = () => page.evaluate(() => {
      const chart = Chart.getChart('history-chart');
      return chart ? chart.data.datasets[0].data.length : -1;
    });
    await eventually('three bars for three runs', async () => (await bars()) === 3);
    assert.equal(await page.locator('#history-rate').innerText(), '67%', 'two of three succeeded');
    const colours = await page.evaluate(() => Chart.getChart('history-chart').data.datasets[0].backgroundColor);
    assert.equal(new Set(colours).size, 2, `bars coloured by status: ${colours}`);
    assert.ok(await page.locator('#history-chart').isVisible(), 'the canvas is drawn');
    await page.locator('#runs-chain', { hasText: 'Starts: chart-child (on success)' }).waitFor();
    // The overview: one bar per minute of the last hour, runs counted.
    await eventually('the per-minute chart', () => page.evaluate(() => {
      const chart = Chart.getChart('minutes-chart');
      return chart && chart.data.labels.length === 60 && chart.data.datasets[0].data.reduce((a, b) => a + b, 0) > 0;
    }));
    await shot('charts');
    await page.goto(base + '/#/jobs/chart-child/runs');
    await page.locator('#runs-chain', { hasText: 'Started by: charted (on success)' }).waitFor();
    const child = await eventually('the chained run', async () => (await finalRuns('chart-child'))[0]);
    assert.ok(child.triggeredBy && child.triggeredBy.startsWith('charted-'), `triggeredBy: ${child.triggeredBy}`);
    const icon = await fetch(base + '/favicon.svg');
    assert.equal(icon.status, 200, 'the favicon is served');
    assert.match(icon.headers.get('content-type') || '', /svg/);
    for (const name of ['charted', 'chart-child']) assert.equal((await post('/job/delete', { name })).status, 200);

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

    // Live output in standalone (the run is in this process).
    const liveStandalone = await followLive(page, base, token, 'standalone');

    // Live output through a second manager: the run is started through
    // manager A; the console of manager B follows it from the worker.
    const clusterToken = 'browser-admin-' + Date.now().toString(16).padStart(16, '0');
    const clusterDir = mkdtempSync(join(tmpdir(), 'distcron-browser-cluster-'));
    const cluster = await startCluster(clusterToken, clusterDir);
    let liveCluster;
    try {
      const pageB = await browser.newPage({ viewport: { width: 1400, height: 900 } });
      pageB.on('pageerror', (e) => pageErrors.push(e.message));
      await pageB.goto(cluster.bases[1] + '/');
      await pageB.locator('#signin-form').waitFor();
      await pageB.fill('#signin-token', clusterToken);
      await pageB.click('#signin-submit');
      await pageB.locator('#nav-views').waitFor();
      liveCluster = await followLive(pageB, cluster.bases[0], clusterToken, 'cluster');
      await pageB.close();
    } finally {
      for (const c of cluster.children) await stop(c);
      rmSync(clusterDir, { recursive: true, force: true });
    }
    const liveFigures = (seen) => ({ lines: seen.length, p50: percentile(seen, 50), p99: percentile(seen, 99), max: Math.max(...seen) });

    // Sign out: back to the sign-in form, and the session no longer works.
    await page.click('#sign-out');
    await page.locator('#signin-form').waitFor();
    const after = await page.evaluate(async () => (await fetch('/auth/me')).status);
    assert.equal(after, 401, 'signed out everywhere');

    assert.deepEqual(dialogs, [], 'no script ran from user or job text');
    assert.deepEqual(pageErrors, [], 'no script errors');
    assert.deepEqual(missingFiles, [], 'every file the console loads is served');
    const firstPageMs = Math.round(Math.min(...timings));
    const report = {
      jobs: MANY_JOBS + 1, firstPageRenderedMs: timings.map(Math.round), saveSeconds,
      liveOutputMs: { standalone: liveFigures(liveStandalone), throughSecondManager: liveFigures(liveCluster) },
    };
    writeFileSync(join(ARTIFACTS, 'report.json'), JSON.stringify(report, null, 2) + '\n');
    console.log(`console: first jobs page rendered in ${firstPageMs} ms with ${MANY_JOBS + 1} jobs ` +
      `(runs: ${report.firstPageRenderedMs.join(', ')} ms); ${MANY_JOBS} jobs saved in ${saveSeconds.toFixed(1)} s`);
    for (const [where, f] of Object.entries(report.liveOutputMs)) {
      console.log(`console: live output (${where}): printed to shown p50 ${f.p50} ms, p99 ${f.p99} ms, max ${f.max} ms over ${f.lines} lines`);
    }
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
