'use strict';
// The data-quality screen (#/quality, or #/quality/SOURCE_ID): for one source and a period, per
// event name the events collected, with warnings, rejected and duplicates (exact counts, by whole
// hours), and the most frequent anomalies with a sample event each. See app.js for App; the
// samples are shown with App.jsonView (inspector.js), their problem's path marked.
(() => {
  const PERIODS = [['3600', 'Last hour'], ['86400', 'Last 24 hours'], ['604800', 'Last 7 days']];
  let lastSource = '';
  let lastPeriod = '86400';

  const eventLabel = name => name === '' ? App.el('em', { class: 'muted' }, '(no event name)') : App.el('code', {}, name);

  // hour shows the start of an hour the counts are kept by.
  function hour(t) {
    const d = new Date(t);
    return isNaN(d) ? '—' : d.toLocaleString([], { dateStyle: 'short', timeStyle: 'short' });
  }

  // sample is an anomaly's sample event, folded, with the anomaly's path marked.
  function sample(a) {
    const el = App.el;
    if (a.sample === undefined || a.sample === null) return el('p', { class: 'muted' }, 'No sample event was kept (it was over 4096 bytes).');
    let view;
    if (typeof a.sample === 'string') {
      view = el('pre', { class: 'json text' }, a.sample); // cut at its limit: the start, as text
    } else if (App.jsonView) {
      view = App.jsonView(a.sample, [{ code: a.code, path: a.path, message: a.message, level: a.level }]).pre;
    } else {
      view = el('pre', { class: 'json' }, App.json(a.sample));
    }
    return el('details', { class: 'sample' }, el('summary', {}, 'Sample event with ', el('code', {}, a.code),
      a.path ? [' at ', el('code', {}, a.path)] : ''), view);
  }

  function anomalies(q) {
    const el = App.el;
    return el('section', { class: 'anomalies', 'data-event-name': q.event_name },
      el('h3', {}, 'Anomalies of ', eventLabel(q.event_name)),
      el('table', { class: 'anomalies-table' },
        el('thead', {}, el('tr', {}, ['Code', 'Level', 'Path', 'Message', 'Count', 'Last seen (hour)'].map(h =>
          el('th', { scope: 'col', class: h === 'Count' ? 'num' : '' }, h)))),
        // Each anomaly's sample folds out in a row of its own below it, the table's full width.
        el('tbody', {}, q.anomalies.flatMap(a => [
          el('tr', { class: 'anomaly', 'data-code': a.code, 'data-level': a.level, 'data-path': a.path },
            el('td', {}, el('code', {}, a.code)),
            el('td', {}, el('span', { class: 'level level-' + a.level }, a.level)),
            el('td', {}, el('code', {}, a.path || '(the whole event)')),
            el('td', { class: 'message' }, a.message),
            el('td', { class: 'num' }, a.count.toLocaleString()),
            el('td', {}, hour(a.last_seen))),
          el('tr', { class: 'sample-row', 'data-code': a.code, 'data-path': a.path },
            el('td', { colspan: '6' }, sample(a)))]))));
  }

  function report(dq) {
    const el = App.el;
    const names = dq.event_names;
    const period = el('p', { class: 'muted', id: 'quality-period-shown' },
      'Hours starting from ', App.time(dq.start), ' to ', App.time(dq.end), '. Exact counts, not sampled.');
    if (!names.length) return [period, el('p', { id: 'quality-empty', class: 'muted' }, 'No events from this source in this period.')];
    const total = k => names.reduce((n, q) => n + q[k], 0);
    const cell = (v, cls) => el('td', { class: 'num' + (v && cls ? ' ' + cls : '') }, v.toLocaleString());
    const table = el('table', { id: 'quality-table' },
      el('thead', {}, el('tr', {}, el('th', { scope: 'col' }, 'Event name'),
        ['Collected', 'With warnings', 'Rejected', 'Duplicates', 'Anomalies'].map(h => el('th', { scope: 'col', class: 'num' }, h)))),
      el('tbody', {}, names.map(q => el('tr', { 'data-event-name': q.event_name },
        el('th', { scope: 'row' }, eventLabel(q.event_name)),
        cell(q.collected), cell(q.with_warnings, 'warn'), cell(q.rejected, 'bad'), cell(q.duplicates),
        el('td', { class: 'num' }, String(q.anomalies.length))))),
      el('tfoot', {}, el('tr', { class: 'total' }, el('th', { scope: 'row' }, 'All'),
        cell(total('collected')), cell(total('with_warnings'), 'warn'), cell(total('rejected'), 'bad'), cell(total('duplicates')),
        el('td', {}))));
    return [period, table, names.filter(q => q.anomalies.length).map(anomalies)];
  }

  App.route('quality', async (view, params) => {
    const el = App.el;
    const sources = [];
    for (let after = ''; ;) {
      const page = await App.api('GET', '/api/sources?limit=1000' + (after ? '&after=' + encodeURIComponent(after) : ''));
      sources.push(...page.items);
      if (!page.next) break;
      after = page.next;
    }
    view.append(el('h1', {}, 'Data quality'));
    if (!sources.length) {
      view.append(el('p', { class: 'muted' }, 'No source yet: ', el('a', { href: '#/sources' }, 'create one'), '.'));
      return;
    }
    const wanted = (params[0] && /^\d+$/.test(params[0])) ? params[0] : lastSource;
    const sourceSelect = el('select', { id: 'quality-source' },
      sources.map(s => el('option', { value: String(s.id) }, s.id + ' — site ' + s.site + (s.name ? ' — ' + s.name : '') + (s.active ? '' : ' (inactive)'))));
    if (sources.some(s => String(s.id) === wanted)) sourceSelect.value = wanted;
    const periodSelect = el('select', { id: 'quality-period' }, PERIODS.map(([v, label]) => el('option', { value: v }, label)));
    periodSelect.value = lastPeriod;
    const results = el('div', { id: 'quality-results', 'aria-live': 'polite', 'aria-busy': 'true' });
    const form = el('form', { id: 'quality-form', class: 'filters' },
      el('div', {}, el('label', { for: 'quality-source' }, 'Source'), sourceSelect),
      el('div', {}, el('label', { for: 'quality-period' }, 'Period'), periodSelect),
      el('div', { class: 'filter-buttons' }, el('button', { type: 'submit', id: 'quality-refresh' }, 'Refresh')));
    view.append(form, results);

    let controller = null;
    async function load() {
      if (controller) controller.abort();
      controller = new AbortController();
      lastSource = sourceSelect.value;
      lastPeriod = periodSelect.value;
      const end = new Date();
      const start = new Date(end.getTime() - Number(periodSelect.value) * 1000);
      results.setAttribute('aria-busy', 'true');
      const dq = await App.api('GET', '/api/sources/' + sourceSelect.value + '/data-quality?start=' +
        encodeURIComponent(start.toISOString()) + '&end=' + encodeURIComponent(end.toISOString()), undefined, { signal: controller.signal });
      results.replaceChildren(...report(dq).flat());
      results.setAttribute('aria-busy', 'false');
    }
    form.addEventListener('submit', (e) => { e.preventDefault(); App.guard(load); });
    sourceSelect.addEventListener('change', () => App.guard(load));
    periodSelect.addEventListener('change', () => App.guard(load));
    await load();
    return () => { if (controller) controller.abort(); };
  });
})();
