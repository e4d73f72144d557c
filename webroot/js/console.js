// The distcron console: one page, four views (jobs, runs of a job, running
// now, workers), all from the manager's HTTP API.
//
// Safety rule: anything that came from a user or a job (names, commands,
// output, error messages) reaches the page only through .text() or .val(),
// never as HTML.
'use strict';

$(function () {
  const JOBS_PER_PAGE = 50;
  const RUNS_PER_PAGE = 20;

  // --- Talking to the API ---------------------------------------------------

  // Resolve with the envelope's `data`; reject with an Error carrying the
  // envelope's message (which names the field at fault, "cronExpr: ...").
  // The session's CSRF token, sent on every mutating request; from sign-in
  // or /auth/me. The session itself is an HttpOnly cookie the page never sees.
  let csrfToken = '';

  function api(method, path, data, asJson) {
    const request = { method: method, url: path, dataType: 'json', headers: {} };
    if (method !== 'GET') {
      request.headers['X-CSRF-Token'] = csrfToken;
      // A session may send JSON only (form bodies need a Bearer token).
      asJson = true;
      if (data === undefined) data = {};
    }
    if (asJson) {
      request.contentType = 'application/json';
      request.data = JSON.stringify(data);
    } else if (data !== undefined) {
      request.data = data;
    }
    return new Promise(function (resolve, reject) {
      $.ajax(request)
        .done(function (body) { resolve(body.data); })
        .fail(function (xhr) {
          const msg = (xhr.responseJSON && xhr.responseJSON.msg) ||
            (xhr.status === 0 ? 'the manager cannot be reached' : xhr.status + ' ' + xhr.statusText);
          const error = new Error(msg);
          error.status = xhr.status;
          if (xhr.status === 401 && path !== '/auth/login') showSignIn();
          reject(error);
        });
    });
  }

  // Disable `button` until `promise` settles.
  function busy(button, promise) {
    const $b = $(button).prop('disabled', true);
    return promise.finally(function () { $b.prop('disabled', false); });
  }

  function toast(message, kind) {
    const $t = $('<div class="toast align-items-center border-0" role="status" aria-live="polite">')
      .addClass(kind === 'error' ? 'text-bg-danger' : 'text-bg-success')
      .append($('<div class="d-flex">')
        .append($('<div class="toast-body">').text(message))
        .append('<button type="button" class="btn-close btn-close-white me-2 m-auto" data-bs-dismiss="toast" aria-label="Close"></button>'));
    $('#toasts').append($t);
    $t.on('hidden.bs.toast', function () { $t.remove(); });
    bootstrap.Toast.getOrCreateInstance($t[0], { delay: kind === 'error' ? 8000 : 3000 }).show();
  }

  // Run an action from `button`, and say how it went.
  function act(button, promise, success) {
    return busy(button, promise)
      .then(function (data) { toast(success); refreshView(); refreshOverview(); return data; })
      .catch(function (e) { toast(e.message, 'error'); });
  }

  // --- Formatting -------------------------------------------------------------

  function pad(n) { return String(n).padStart(2, '0'); }

  // Local time as text, "2026-11-21 06:07:18".
  function timeText(value) {
    const d = new Date(value);
    return d.getFullYear() + '-' + pad(d.getMonth() + 1) + '-' + pad(d.getDate()) + ' ' +
      pad(d.getHours()) + ':' + pad(d.getMinutes()) + ':' + pad(d.getSeconds());
  }

  // Local time; the UTC instant in the tooltip.
  function time(value) {
    if (value === null || value === undefined || value === '' || value === 0) return $('<span>').text('–');
    return $('<span>').text(timeText(value)).attr('title', new Date(value).toISOString());
  }

  function duration(ms) {
    if (ms < 1000) return ms + ' ms';
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' min ' + Math.floor(s % 60) + ' s';
    return Math.floor(m / 60) + ' h ' + (m % 60) + ' min';
  }

  function bytes(n) {
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + ' KiB';
    return (n / 1024 / 1024).toFixed(1) + ' MiB';
  }

  const STATUS_CLASS = {
    succeeded: 'text-bg-success', failed: 'text-bg-danger', timed_out: 'text-bg-warning',
    killed: 'text-bg-secondary', lost: 'text-bg-dark', skipped: 'text-bg-light', missed: 'text-bg-info', running: 'text-bg-primary',
    started: 'text-bg-primary', pending: 'text-bg-info'
  };
  // Runs still open in the run log read as in progress.
  const STATUS_LABEL = { started: 'running', pending: 'retry pending' };

  function badge(status) {
    return $('<span class="badge status">').addClass(STATUS_CLASS[status] || 'text-bg-light')
      .text(STATUS_LABEL[status] || status);
  }

  function cell(content) { return $('<td>').append(content); }
  function textCell(text) { return $('<td>').text(text); }

  function runsHash(name) { return '#/jobs/' + encodeURIComponent(name) + '/runs'; }

  // --- Views and their refresh ----------------------------------------------

  let refreshTimer = null;
  let refreshView = function () {};

  // Show one view; `load` fills it, and runs again every `every` ms.
  function showView(name, load, every) {
    $('.view').prop('hidden', true);
    $('#view-' + name).prop('hidden', false);
    $('.nav-link').removeClass('active').filter('[data-view="' + (name === 'runs' ? 'jobs' : name) + '"]').addClass('active');
    clearTimeout(refreshTimer);
    refreshView = function () {
      clearTimeout(refreshTimer);
      return load().finally(function () {
        clearTimeout(refreshTimer);
        refreshTimer = setTimeout(refreshView, typeof every === 'function' ? every() : every);
      });
    };
    refreshView();
  }

  // --- Signing in ------------------------------------------------------------

  let signedIn = false;

  function showSignIn() {
    signedIn = false;
    csrfToken = '';
    $('#whoami').text('');
    $('#signed-in').removeClass('d-flex').addClass('d-none');
    $('#nav-views').prop('hidden', true);
    clearTimeout(refreshTimer);
    $('.view, #overview').prop('hidden', true);
    $('#view-signin').prop('hidden', false);
  }

  function signedInAs(who) {
    signedIn = true;
    csrfToken = who.csrfToken;
    $('#whoami').text(who.name + ' (' + who.role + ')');
    $('#signed-in').removeClass('d-none').addClass('d-flex');
    $('#nav-views').prop('hidden', false);
    $('#nav-audit').parent().prop('hidden', who.role !== 'admin');
    $('#view-signin').prop('hidden', true);
    $('#overview').prop('hidden', false);
    route();
    refreshOverview();
  }

  $('#signin-form').on('submit', function (event) {
    event.preventDefault();
    const token = $('#signin-token').val().trim();
    const body = token ? { token: token } :
      { user: $('#signin-user').val().trim(), password: $('#signin-password').val() };
    busy('#signin-submit', api('POST', '/auth/login', body, true))
      .then(function (who) {
        $('#signin-form')[0].reset();
        $('#signin-error').prop('hidden', true);
        signedInAs(who);
      })
      .catch(function (e) { $('#signin-error').text(e.message).prop('hidden', false); });
  });

  $('#sign-out').on('click', function () {
    api('POST', '/auth/logout').finally(showSignIn);
  });

  function route() {
    if (!signedIn) return;
    const hash = location.hash || '#/jobs';
    const runs = hash.match(/^#\/jobs\/([^/]+)\/runs$/);
    const run = hash.match(/^#\/run\/(.+)$/);
    if (runs) {
      openRuns(decodeURIComponent(runs[1]));
    } else if (run) {
      // A link from a notification: the run over the jobs page.
      showView('jobs', loadJobs, 10000);
      openRun(decodeURIComponent(run[1]));
    } else if (hash === '#/notify') {
      showView('notify', loadTargets, 30000);
    } else if (hash === '#/running') {
      showView('running', loadRunning, 2000);
    } else if (hash === '#/workers') {
      showView('workers', loadWorkers, 5000);
    } else if (hash === '#/audit') {
      showView('audit', loadAudit, 10000);
    } else {
      showView('jobs', loadJobs, 10000);
    }
  }

  // --- Overview strip ---------------------------------------------------------

  const STATUS_COLOURS = {
    succeeded: '#198754', failed: '#dc3545', timed_out: '#fd7e14', killed: '#6f42c1',
    lost: '#343a40', skipped: '#adb5bd', missed: '#ffc107', started: '#0d6efd', pending: '#0dcaf0',
  };

  // One Chart.js chart per canvas, updated in place on each refresh.
  function drawBars(canvasId, labels, datasets, options) {
    const existing = Chart.getChart(canvasId);
    if (existing) {
      existing.data.labels = labels;
      existing.data.datasets = datasets;
      existing.update('none');
      return existing;
    }
    return new Chart(document.getElementById(canvasId), {
      type: 'bar',
      data: { labels: labels, datasets: datasets },
      options: Object.assign({
        animation: false, maintainAspectRatio: false, responsive: true,
        plugins: { legend: { display: datasets.length > 1, position: 'right' } },
        scales: { x: { ticks: { maxTicksLimit: 12 } }, y: { beginAtZero: true } },
      }, options || {}),
    });
  }

  function refreshMinutes() {
    return api('GET', '/stats/minutes', { minutes: 60 }).then(function (minutes) {
      $('#minutes-card').prop('hidden', false);
      const labels = minutes.map(function (m) { return timeText(m.minute).slice(11, 16); });
      drawBars('minutes-chart', labels, [
        { label: 'runs', data: minutes.map(function (m) { return m.runs; }), backgroundColor: '#0d6efd' },
        { label: 'failures', data: minutes.map(function (m) { return m.failures; }), backgroundColor: '#dc3545' },
      ], { scales: { x: { stacked: false, ticks: { maxTicksLimit: 12 } }, y: { beginAtZero: true } } });
    }).catch(function () { /* the strip shows the API is unreachable */ });
  }

  function refreshOverview() {
    if (!signedIn) return Promise.resolve();
    refreshMinutes();
    return api('GET', '/overview').then(function (o) {
      $('#overview [data-count]').each(function () {
        const value = o[$(this).data('count')];
        $(this).text(value === undefined ? '–' : value.toLocaleString('en-US'));
      });
    }).catch(function () {
      $('#overview [data-count]').text('?');
    });
  }

  // --- Jobs ------------------------------------------------------------------

  const jobsPage = { skip: 0, q: '', total: 0 };

  function loadJobs() {
    const query = { skip: jobsPage.skip, limit: JOBS_PER_PAGE };
    if (jobsPage.q) query.q = jobsPage.q;
    return api('GET', '/job/table', query).then(function (table) {
      jobsPage.total = table.total;
      if (table.rows.length === 0 && jobsPage.skip > 0) {
        jobsPage.skip = Math.max(0, jobsPage.skip - JOBS_PER_PAGE);
        return loadJobs();
      }
      $('#jobs-table tbody').empty().append(table.rows.map(jobRow));
      // For the browser test's "first page rendered" figure.
      if (performance.getEntriesByName('jobs-rendered').length === 0) performance.mark('jobs-rendered');
      const last = jobsPage.skip + table.rows.length;
      $('#jobs-range').text(table.total === 0 ? '' :
        (jobsPage.skip + 1).toLocaleString('en-US') + '–' + last.toLocaleString('en-US') +
        ' of ' + table.total.toLocaleString('en-US'));
      $('#jobs-prev').prop('disabled', jobsPage.skip === 0);
      $('#jobs-next').prop('disabled', last >= table.total);
      $('#jobs-empty').prop('hidden', table.total > 0 || jobsPage.q !== '');
    }).catch(function (e) { toast('Jobs: ' + e.message, 'error'); });
  }

  function jobRow(row) {
    const job = row.job;
    const $tr = $('<tr>').attr('data-job', job.name);
    $tr.append(cell($('<a class="font-monospace">').attr('href', runsHash(job.name)).text(job.name)));
    $tr.append(cell([
      $('<code>').text(job.cronExpr),
      ' ',
      $('<span class="badge text-bg-light">').text(job.timezone)
    ]));
    $tr.append(cell(row.next ? time(row.next)
      : row.scheduleNote ? $('<span class="text-body-secondary">').attr('title', row.scheduleNote).text('after each run')
        : $('<span class="text-body-secondary">').text('–')));
    if (row.running > 0) {
      $tr.append(cell([badge('running'), ' ', $('<span class="small">').text(row.running + ' in progress')]));
    } else if (row.lastRun) {
      $tr.append(cell([badge(row.lastRun.status), ' ', time(row.lastRun.startTime)]));
    } else {
      $tr.append(cell($('<span class="text-body-secondary">').text('never')));
    }
    $tr.append(cell(job.enabled ? $('<span class="badge text-bg-success">').text('enabled')
      : $('<span class="badge text-bg-warning">').text('paused')));
    const $actions = $('<div class="btn-group btn-group-sm">');
    $actions.append($('<button class="btn btn-outline-primary" data-action="edit">').text('Edit'));
    $actions.append($('<button class="btn btn-outline-primary" data-action="run">').text('Run now'));
    $actions.append($('<button class="btn btn-outline-primary" data-action="run-params">').attr('title', 'Run with parameters').text('Run…'));
    $actions.append(job.enabled
      ? $('<button class="btn btn-outline-warning" data-action="pause">').text('Pause')
      : $('<button class="btn btn-outline-success" data-action="resume">').text('Resume'));
    if (row.running > 0) {
      $actions.append($('<button class="btn btn-outline-danger" data-action="kill">').text('Kill'));
    }
    $actions.append($('<button class="btn btn-outline-danger" data-action="delete">').text('Delete'));
    $tr.append($('<td class="text-end">').append($actions));
    $tr.data('job', job);
    return $tr;
  }

  $('#jobs-table').on('click', 'button[data-action]', function () {
    const job = $(this).closest('tr').data('job');
    const name = job.name;
    switch ($(this).data('action')) {
      case 'edit': openEditor(job); break;
      case 'run': act(this, api('POST', '/job/run', { name: name }), 'Started ' + name); break;
      case 'run-params': openRunParams(name); break;
      case 'pause': act(this, api('POST', '/job/pause', { name: name }), 'Paused ' + name); break;
      case 'resume': act(this, api('POST', '/job/resume', { name: name }), 'Resumed ' + name); break;
      case 'kill': act(this, api('POST', '/job/kill', { name: name }), 'Kill sent to ' + name); break;
      case 'delete':
        confirmDelete(name).then(function (button) {
          act(button, api('POST', '/job/delete', { name: name }), 'Deleted ' + name);
        });
        break;
    }
  });

  let searchTimer = null;
  $('#job-search').on('input', function () {
    clearTimeout(searchTimer);
    const q = $(this).val().trim();
    searchTimer = setTimeout(function () {
      jobsPage.q = q;
      jobsPage.skip = 0;
      refreshView();
    }, 250);
  });
  $('#jobs-prev').on('click', function () {
    jobsPage.skip = Math.max(0, jobsPage.skip - JOBS_PER_PAGE);
    busy(this, refreshView());
  });
  $('#jobs-next').on('click', function () {
    jobsPage.skip += JOBS_PER_PAGE;
    busy(this, refreshView());
  });

  // Resolves with the confirm button once the user confirms.
  // --- Run with parameters ----------------------------------------------------

  const runParamsModal = bootstrap.Modal.getOrCreateInstance('#run-params');

  function openRunParams(name) {
    $('#run-params-job').text(name);
    $('#run-params-error').prop('hidden', true);
    runParamsModal.show();
  }

  $('#run-params').on('shown.bs.modal', function () { $('#run-params-env').trigger('focus'); });

  $('#run-params-form').on('submit', function (event) {
    event.preventDefault();
    const name = $('#run-params-job').text();
    const env = {};
    const lines = $('#run-params-env').val().split('\n').map(function (l) { return l.trim(); }).filter(Boolean);
    for (const line of lines) {
      const at = line.indexOf('=');
      if (at <= 0) {
        $('#run-params-error').text('"' + line + '" is not KEY=VALUE').prop('hidden', false);
        return;
      }
      env[line.slice(0, at)] = line.slice(at + 1);
    }
    busy('#run-params-submit', api('POST', '/job/run', { name: name, env: env }, true)).then(function () {
      runParamsModal.hide();
      toast('Started ' + name + ' with ' + (Object.keys(env).join(', ') || 'no parameters'));
      refreshView();
    }).catch(function (e) {
      $('#run-params-error').text(e.message).prop('hidden', false);
    });
  });

  function confirmDelete(name) {
    $('#confirm-text').empty().append('Delete job ', $('<strong class="font-monospace">').text(name),
      '? Its definition goes; its run history stays.');
    const modal = bootstrap.Modal.getOrCreateInstance('#confirm');
    return new Promise(function (resolve) {
      $('#confirm-ok').off('click').on('click', function () {
        modal.hide();
        resolve(this);
      });
      modal.show();
    });
  }

  // --- Job editor -------------------------------------------------------------

  const editorModal = bootstrap.Modal.getOrCreateInstance('#job-editor');
  let editing = null; // the job being edited; null for a new one

  function openEditor(job) {
    editing = job;
    const j = job || {};
    $('#job-editor-title').text(job ? 'Edit ' + job.name : 'New job');
    $('#f-name').val(j.name || '').prop('readonly', !!job);
    $('#f-command').val(j.command || '');
    $('#f-cronExpr').val(j.cronExpr || '');
    $('#f-timezone').val(j.timezone || 'UTC');
    $('#f-group').val(j.group || 'default');
    $('#f-timeout').val(j.timeout || '');
    $('#f-workdir').val(j.workdir || '');
    $('#f-overlap').val(j.overlap || 'forbid');
    $('#f-onLost').val(j.onLost || 'ignore');
    // The older catchUp: N reads as misfire latest within N seconds.
    const legacy = j.catchUp > 0;
    $('#f-misfire').val(j.misfire || (legacy ? 'latest' : 'all'));
    $('#f-misfireWindowSecs').val(j.misfireWindowSecs !== undefined ? j.misfireWindowSecs : (legacy ? j.catchUp : ''));
    $('#f-retries').val(j.retries || '');
    $('#f-retryBackoff').val(j.retryBackoff === undefined ? '' : j.retryBackoff);
    $('#f-enabled').prop('checked', job ? j.enabled : true);
    $('#f-env').val(Object.entries(j.env || {}).map(function (kv) { return kv[0] + '=' + kv[1]; }).join('\n'));
    clearErrors();
    $('#preview').empty();
    if (j.cronExpr) preview();
    editorModal.show();
  }

  $('#new-job').on('click', function () { openEditor(null); });
  $('#job-editor').on('shown.bs.modal', function () {
    $(editing ? '#f-command' : '#f-name').trigger('focus');
  });

  function clearErrors() {
    $('#job-form .is-invalid').removeClass('is-invalid');
    $('#job-form [data-error-for]').text('');
    $('#job-form-error').prop('hidden', true).text('');
  }

  // Show an API error next to the field it names, else above the form.
  function showError(message) {
    const m = message.match(/^([A-Za-z]+): ([\s\S]*)$/);
    const $field = m ? $('#job-form [name="' + m[1] + '"]') : $();
    if ($field.length) {
      $field.addClass('is-invalid');
      $('#job-form [data-error-for="' + m[1] + '"]').text(m[2]);
    } else {
      $('#job-form-error').prop('hidden', false).text(message);
    }
  }

  // The schedule checked as it is typed: the next fire times, or the error.
  let previewTimer = null;
  let previewSeq = 0;
  function preview() {
    const seq = ++previewSeq;
    const cronExpr = $('#f-cronExpr').val().trim();
    const timezone = $('#f-timezone').val().trim() || 'UTC';
    $('#f-cronExpr, #f-timezone').removeClass('is-invalid');
    if (!cronExpr) { $('#preview').empty(); return; }
    // The job's name resolves H fields to the times this job will use.
    const name = $('#f-name').val().trim();
    api('GET', '/schedule/preview', { cronExpr: cronExpr, timezone: timezone, name: name }).then(function (p) {
      if (seq !== previewSeq) return;
      $('[data-error-for="cronExpr"], [data-error-for="timezone"]').text('');
      $('#preview').empty().append(p.next.map(function (t) {
        return $('<li>').append(time(t), ' ', $('<span class="text-body-secondary">').text('(' + t + ')'));
      }));
      if (p.note) $('#preview').append($('<li class="text-body-secondary">').text(p.note));
    }).catch(function (e) {
      if (seq !== previewSeq) return;
      $('#preview').empty();
      showError(e.message);
    });
  }
  $('#f-cronExpr, #f-timezone, #f-name').on('input', function () {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(preview, 250);
  });

  function numberOrUndefined(selector) {
    const text = $(selector).val().trim();
    return text === '' ? undefined : Number(text);
  }

  // The form as a job document; fields left empty take the server's defaults.
  function formJob() {
    const job = {
      name: $('#f-name').val().trim(),
      command: $('#f-command').val(),
      cronExpr: $('#f-cronExpr').val().trim(),
      timezone: $('#f-timezone').val().trim() || 'UTC',
      group: $('#f-group').val().trim() || 'default',
      overlap: $('#f-overlap').val(),
      onLost: $('#f-onLost').val(),
      enabled: $('#f-enabled').prop('checked'),
      timeout: numberOrUndefined('#f-timeout'),
      misfire: $('#f-misfire').val(),
      misfireWindowSecs: numberOrUndefined('#f-misfireWindowSecs'),
      retries: numberOrUndefined('#f-retries'),
      retryBackoff: numberOrUndefined('#f-retryBackoff'),
      workdir: $('#f-workdir').val().trim() || undefined
    };
    const env = {};
    const lines = $('#f-env').val().split('\n').map(function (l) { return l.trim(); }).filter(Boolean);
    for (const line of lines) {
      const at = line.indexOf('=');
      if (at <= 0) throw new Error('env: "' + line + '" is not NAME=value');
      env[line.slice(0, at)] = line.slice(at + 1);
    }
    if (lines.length) job.env = env;
    return job;
  }

  $('#job-form').on('submit', function (event) {
    event.preventDefault();
    clearErrors();
    let job;
    try { job = formJob(); } catch (e) { showError(e.message); return; }
    busy('#job-save', api('POST', '/job/save', job, true)).then(function () {
      editorModal.hide();
      toast('Saved ' + job.name);
      refreshView();
      refreshOverview();
    }).catch(function (e) {
      showError(e.message);
      toast('Not saved: ' + e.message, 'error');
    });
  });

  // --- Runs of a job ----------------------------------------------------------

  const runsPage = { name: '', skip: 0, status: '', running: 0 };

  function openRuns(name) {
    if (runsPage.name !== name) {
      runsPage.name = name;
      runsPage.skip = 0;
      runsPage.status = '';
      $('#runs-status').val('');
    }
    $('#runs-job').text(name);
    // Poll quickly while a run is in progress, so it is seen to end.
    showView('runs', loadRuns, function () { return runsPage.running > 0 ? 1000 : 5000; });
  }

  function loadRuns() {
    const name = runsPage.name;
    const query = { name: name, skip: runsPage.skip, limit: RUNS_PER_PAGE };
    if (runsPage.status) query.status = runsPage.status;
    return Promise.all([api('GET', '/job/log', query), api('GET', '/job/get', { name: name }),
      api('GET', '/job/history', { name: name, limit: 50 })])
      .then(function (results) {
        if (name !== runsPage.name) return;
        const runs = results[0];
        const running = results[1].running || [];
        showChain(results[1]);
        showHistory(results[2]);
        runsPage.running = running.length;
        const $body = $('#runs-table tbody').empty();
        if (runsPage.skip === 0 && !runsPage.status) {
          $body.append(running.map(function (r) {
            return $('<tr class="run-row table-primary">').attr('data-run', r.run_id).data('runningSince', r.startTime).append(
              cell(badge('running')), cell(time(r.planTime)), cell(time(r.startTime)),
              textCell(duration(Math.max(0, Date.now() - r.startTime)) + ' so far'), textCell(r.worker), textCell('–'));
          }));
        }
        $body.append(runs.map(function (r) {
          return $('<tr class="run-row">').attr('data-run', r.run_id).append(
            cell(badge(r.status)), cell(time(r.planTime)), cell(time(r.startTime)),
            textCell((r.status === 'skipped' || r.status === 'missed') ? '–' : duration(Math.max(0, r.endTime - r.startTime))),
            textCell(r.worker),
            textCell(r.exitCode !== undefined ? r.exitCode : (r.signal ? 'signal ' + r.signal : '–')));
        }));
        $('#runs-range').text(runs.length ? 'runs ' + (runsPage.skip + 1) + '–' + (runsPage.skip + runs.length) : '');
        $('#runs-newer').prop('disabled', runsPage.skip === 0);
        $('#runs-older').prop('disabled', runs.length < RUNS_PER_PAGE);
        $('#runs-empty').prop('hidden', runs.length + running.length > 0);
      })
      .catch(function (e) { toast('Runs of ' + name + ': ' + e.message, 'error'); });
  }

  // The jobs that start this one and those it starts, as links.
  function showChain(detail) {
    const $chain = $('#runs-chain').empty();
    const links = function (label, list) {
      if (!list || !list.length) return;
      $chain.append($('<span class="text-body-secondary ms-2">').text(label + ': '));
      list.forEach(function (l, i) {
        if (i) $chain.append(', ');
        $chain.append($('<a class="font-monospace chain-link">').attr('href', runsHash(l.job)).text(l.job),
          $('<span class="text-body-secondary">').text(' (on ' + l.on + ')'));
      });
    };
    links('Started by', detail.upstream);
    links('Starts', detail.downstream);
  }

  // The last runs as bars: duration in seconds, coloured by status.
  function showHistory(history) {
    const runs = history.runs;
    $('#history-count').text(runs.length);
    $('#history-rate').text(history.successRate === null || history.successRate === undefined
      ? '–' : Math.round(history.successRate * 100) + '%');
    drawBars('history-chart', runs.map(function (r) { return timeText(r.startTime); }), [{
      label: 'duration (s)',
      data: runs.map(function (r) { return r.durationMs / 1000; }),
      backgroundColor: runs.map(function (r) { return STATUS_COLOURS[r.status] || '#6c757d'; }),
      runIds: runs.map(function (r) { return r.run_id; }),
      statuses: runs.map(function (r) { return r.status; }),
      minBarLength: 2,
    }], {
      scales: { x: { ticks: { display: false } }, y: { beginAtZero: true, title: { display: true, text: 's' } } },
      plugins: { legend: { display: false }, tooltip: { callbacks: {
        label: function (c) { return c.dataset.statuses[c.dataIndex] + ', ' + c.parsed.y + ' s'; },
      } } },
      onClick: function (_, elements, chart) {
        if (elements.length) openRun(chart.data.datasets[0].runIds[elements[0].index]);
      },
    });
  }

  $('#runs-status').on('change', function () {
    runsPage.status = $(this).val();
    runsPage.skip = 0;
    refreshView();
  });
  $('#runs-newer').on('click', function () {
    runsPage.skip = Math.max(0, runsPage.skip - RUNS_PER_PAGE);
    busy(this, refreshView());
  });
  $('#runs-older').on('click', function () {
    runsPage.skip += RUNS_PER_PAGE;
    busy(this, refreshView());
  });
  $('#runs-table').on('click', 'tr.run-row', function () {
    openRun($(this).attr('data-run'));
  });

  // --- Run output viewer --------------------------------------------------------

  const runModal = bootstrap.Modal.getOrCreateInstance('#run-viewer');
  let viewing = null;
  let viewTimer = null;
  // The live stream being read (an AbortController), while a run is followed.
  let following = null;

  function fact(label, value) {
    return $('<dt class="col-sm-2">').text(label).add($('<dd class="col-sm-10 mb-1">').append(value));
  }

  const FINAL = ['succeeded', 'failed', 'timed_out', 'killed', 'lost', 'skipped', 'missed'];

  function openRun(runId) {
    viewing = runId;
    $('#run-viewer-title').text(runId);
    $('#run-facts').empty();
    $('#run-output').text('Loading…');
    runModal.show();
    loadRun(runId);
  }

  function showFacts(r) {
    $('#run-facts').empty().append(
      fact('Job', $('<span class="font-monospace">').text(r.jobName)),
      fact('Status', badge(r.status)),
      fact('Command', $('<code>').text(r.command)),
      fact('Worker', $('<span>').text(r.worker)),
      fact('Planned', time(r.planTime)),
      fact('Started', time(r.startTime)),
      fact('Duration', $('<span>').text(duration(Math.max(0, r.endTime - r.startTime)))),
      fact('Exit', $('<span>').text(r.exitCode !== undefined ? r.exitCode : (r.signal ? 'signal ' + r.signal : '–'))));
    if (r.requestedBy) $('#run-facts').append(fact('Requested by', $('<span>').text(r.requestedBy)));
    if (r.params && Object.keys(r.params).length) {
      $('#run-facts').append(fact('Parameters', $('<code>').text(Object.entries(r.params)
        .map(function (kv) { return kv[0] + '=' + kv[1]; }).join(' '))));
    }
    if (r.triggeredBy) {
      $('#run-facts').append(fact('Started by', $('<a href="#" class="font-monospace" id="run-parent">').text(r.triggeredBy)
        .on('click', function (e) { e.preventDefault(); openRun(r.triggeredBy); })));
    }
    if (r.err) $('#run-facts').append(fact('Error', $('<span class="text-danger">').text(r.err)));
  }

  // The run's record; while it is in progress, its output live, then the
  // stored record once it ends (the record is the source of truth).
  function loadRun(runId) {
    clearTimeout(viewTimer);
    api('GET', '/run/get', { id: runId }).then(function (r) {
      if (viewing !== runId) return;
      showFacts(r);
      if (FINAL.indexOf(r.status) >= 0) {
        stopFollowing();
        $('#run-output').text(r.output + (r.truncated ? '\n[output truncated]' : ''));
        loadNotices(runId);
      } else if (!following) {
        follow(runId);
      } else {
        // The stream ended; the final record is on its way.
        viewTimer = setTimeout(function () { loadRun(runId); }, 500);
      }
    }).catch(function (e) {
      if (viewing !== runId) return;
      if (e.status === 404 && !following) {
        // Not recorded yet (just started): follow it live all the same.
        $('#run-facts').empty().append(fact('Status', badge('running')));
        follow(runId);
      } else if (e.status === 404) {
        viewTimer = setTimeout(function () { loadRun(runId); }, 500);
      } else {
        $('#run-output').text('Could not load the run: ' + e.message);
      }
    });
  }

  // Follow `GET /run/tail` (server-sent events through fetch, which sends
  // the session cookie): `output` events append, `end` closes the stream.
  function follow(runId) {
    stopFollowing();
    const controller = new AbortController();
    following = controller;
    let started = false;
    $('#run-live').prop('hidden', false);
    fetch('/run/tail?id=' + encodeURIComponent(runId), {
      credentials: 'same-origin', signal: controller.signal, headers: { Accept: 'text/event-stream' },
    }).then(function (response) {
      if (!response.ok) throw new Error(response.status + ' ' + response.statusText);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      function read() {
        return reader.read().then(function (chunk) {
          if (chunk.done) return;
          buffer += decoder.decode(chunk.value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut + 2);
            let name = 'message';
            let data = '';
            block.split('\n').forEach(function (line) {
              if (line.indexOf('event: ') === 0) name = line.slice(7);
              else if (line.indexOf('data: ') === 0) data += line.slice(6);
            });
            if (name === 'output' && viewing === runId) {
              if (!started) { $('#run-output').text(''); started = true; }
              const out = document.getElementById('run-output');
              out.appendChild(document.createTextNode(JSON.parse(data).text));
              out.scrollTop = out.scrollHeight;
            }
          }
          return read();
        });
      }
      if (viewing === runId) $('#run-output').text('Waiting for output…');
      return read();
    }).catch(function (e) {
      if (e.name !== 'AbortError' && viewing === runId) toast('Live output: ' + e.message, 'error');
    }).finally(function () {
      if (following !== controller) return;
      $('#run-live').prop('hidden', true);
      if (viewing === runId) viewTimer = setTimeout(function () { loadRun(runId); }, 200);
    });
  }

  function stopFollowing() {
    if (following) following.abort();
    following = null;
    $('#run-live').prop('hidden', true);
  }

  // Who was told of this run, and how it went.
  function loadNotices(runId) {
    api('GET', '/run/notices', { id: runId }).then(function (notices) {
      if (viewing !== runId || !notices.length) return;
      const $list = $('<ul class="list-unstyled mb-0">').append(notices.map(function (n) {
        return $('<li>').text(n.event + ': ' + n.deliveries.map(function (d) {
          return d.target + ' ' + d.outcome + (d.attempts > 1 ? ' after ' + d.attempts + ' attempts' : '') +
            (d.error ? ' (' + d.error + ')' : '');
        }).join('; '));
      }));
      $('#run-facts').append(fact('Notified', $list));
    }).catch(function () { /* notices are a detail; the run shows without them */ });
  }

  $('#run-viewer').on('hidden.bs.modal', function () {
    viewing = null;
    clearTimeout(viewTimer);
    stopFollowing();
  });

  // --- Notification targets ----------------------------------------------------

  function loadTargets() {
    return api('GET', '/notify/targets').then(function (targets) {
      const $body = $('#notify-table tbody');
      const last = {};
      $body.find('tr').each(function () { last[$(this).data('target')] = $(this).find('[data-last]').clone(); });
      $body.empty().append(targets.map(function (t) {
        return $('<tr>').attr('data-target', t.name).append(
          cell($('<span class="font-monospace">').text(t.name)), textCell(t.kind), textCell(t.host),
          $('<td>').append(last[t.name] || $('<span data-last>').text('–')),
          $('<td class="text-end">').append($('<button class="btn btn-sm btn-outline-primary" data-action="test">')
            .text('Send test').data('target', t.name)));
      }));
      $('#notify-empty').prop('hidden', targets.length > 0);
    }).catch(function (e) { toast('Notifications: ' + e.message, 'error'); });
  }

  $('#notify-table').on('click', 'button[data-action="test"]', function () {
    const target = $(this).data('target');
    const $last = $(this).closest('tr').find('[data-last]');
    busy(this, api('POST', '/notify/test', { target: target }).then(function (d) {
      const text = d.outcome + (d.attempts > 1 ? ' after ' + d.attempts + ' attempts' : '') + (d.error ? ': ' + d.error : '');
      $last.text(text).toggleClass('text-danger', d.outcome !== 'delivered');
      toast('Test to ' + target + ': ' + text, d.outcome === 'delivered' ? 'success' : 'error');
    }).catch(function (e) { toast('Test to ' + target + ': ' + e.message, 'error'); }));
  });

  // --- Running now --------------------------------------------------------------

  function loadRunning() {
    return api('GET', '/job/running').then(function (runs) {
      runs.sort(function (a, b) { return a.startTime - b.startTime; });
      $('#running-table tbody').empty().append(runs.map(function (r) {
        return $('<tr>').attr('data-job', r.jobName).attr('data-run', r.run_id).append(
          cell($('<a class="font-monospace">').attr('href', runsHash(r.jobName)).text(r.jobName)),
          textCell(r.worker), cell(time(r.startTime)), textCell(duration(r.elapsedMs)),
          $('<td class="text-end">').append($('<button class="btn btn-sm btn-outline-danger" data-action="kill">')
            .text('Kill').data('job', r.jobName)));
      }));
      $('#running-empty').prop('hidden', runs.length > 0);
    }).catch(function (e) { toast('Running: ' + e.message, 'error'); });
  }

  $('#running-table').on('click', 'button[data-action="kill"]', function () {
    const name = $(this).data('job');
    act(this, api('POST', '/job/kill', { name: name }), 'Kill sent to ' + name);
  });

  // --- Workers ------------------------------------------------------------------

  function loadWorkers() {
    return api('GET', '/worker/info').then(function (workers) {
      workers.sort(function (a, b) { return a.address.localeCompare(b.address) || a.id.localeCompare(b.id); });
      $('#workers-table tbody').empty().append(workers.map(function (w) {
        const $beat = cell(time(w.heartbeat));
        if (w.stale) $beat.append(' ', $('<span class="badge text-bg-warning">').text('stale'));
        return $('<tr>').toggleClass('table-warning', !!w.stale).append(
          textCell(w.address), cell($('<span class="font-monospace small">').text(w.id)), textCell(w.group),
          textCell(w.version), textCell(w.cpuPercent.toFixed(1) + ' %'),
          textCell(bytes(w.memoryBytes) + ' (host ' + w.hostMemoryPercent.toFixed(0) + ' %)'),
          textCell(w.running), $beat);
      }));
      $('#workers-empty').prop('hidden', workers.length > 0);
    }).catch(function (e) { toast('Workers: ' + e.message, 'error'); });
  }

  // --- Audit -------------------------------------------------------------------

  function loadAudit() {
    const query = { limit: 100 };
    const actor = $('#audit-actor').val().trim();
    const action = $('#audit-action').val().trim();
    if (actor) query.actor = actor;
    if (action) query.action = action;
    return api('GET', '/audit', query).then(function (rows) {
      $('#audit-table tbody').empty().append(rows.map(function (r) {
        return $('<tr>').toggleClass('table-warning', r.outcome !== 'ok').append(
          cell(time(r.time)), textCell(r.actorName || '(none)'), textCell(r.action),
          textCell(r.job || ''), textCell(r.source), textCell(r.status + ' ' + r.outcome),
          textCell(r.reason || Object.keys(r.changes || {}).join(', ')));
      }));
      $('#audit-empty').prop('hidden', rows.length > 0);
    }).catch(function (e) { toast('Audit: ' + e.message, 'error'); });
  }

  $('#audit-filter').on('submit', function (event) { event.preventDefault(); loadAudit(); });

  // --- Start ----------------------------------------------------------------------

  $(window).on('hashchange', route);
  // Signed in already (a session cookie)? Otherwise show the sign-in form.
  api('GET', '/auth/me').then(signedInAs).catch(function () { showSignIn(); });
  setInterval(refreshOverview, 5000);
});
