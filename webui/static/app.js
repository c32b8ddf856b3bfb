// The UI's core: the admin token (kept in this tab's sessionStorage, sent as a header), calls to
// the config API with their errors shown, a tiny hash router, and DOM helpers that never put API
// data into HTML as markup. Each screen (sources.js, inspector.js, ...) registers a route.
'use strict';

const App = {
  routes: {},
  tokenKey: 'trackapi.adminToken',

  token() { return sessionStorage.getItem(App.tokenKey); },

  // route registers a screen: render(view, params) fills the view element; params are the path
  // segments after the route's name (#/destinations/3 gives ["3"]). A render may return a function
  // that is called when the screen is left (to stop a live stream).
  route(name, render) { App.routes[name] = render; },

  // api calls the config API and returns the decoded JSON (null for 204), or with options.raw the
  // answer's text undecoded (JSON.parse would round large numbers and reformat others in an
  // event's body). An error answer is thrown as an Error with the API's message, status and code;
  // a 401 logs out.
  async api(method, path, body, options) {
    const headers = { 'Authorization': 'Bearer ' + App.token() };
    const init = { method, headers, signal: options && options.signal };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 204) return null;
    const text = await resp.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && data.message) || (resp.status + ' ' + resp.statusText));
      err.status = resp.status;
      err.code = data && data.code;
      if (resp.status === 401) App.logout(err.message);
      throw err;
    }
    if (options && options.raw) return text;
    return data;
  },

  // stream reads server-sent events from path with fetch (EventSource cannot send the token
  // header), calling onEntry(id, data) for each `entry` event, until signal aborts. lastId resumes.
  async stream(path, onEntry, signal, lastId) {
    const headers = { 'Authorization': 'Bearer ' + App.token() };
    if (lastId) headers['Last-Event-ID'] = String(lastId);
    const resp = await fetch(path, { headers, signal });
    if (!resp.ok) {
      let message = resp.status + ' ' + resp.statusText;
      try { message = (await resp.json()).message || message; } catch (e) { /* not JSON */ }
      throw new Error(message);
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let end;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id = null, event = 'message', data = '';
        for (const line of block.split('\n')) {
          if (line.startsWith('id: ')) id = line.slice(4);
          else if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data += line.slice(6);
        }
        if (event === 'entry' && data) onEntry(id, JSON.parse(data));
      }
    }
  },

  showError(err) {
    const box = document.getElementById('error');
    box.textContent = (err && err.message) ? err.message : String(err);
    box.hidden = false;
  },
  clearError() { document.getElementById('error').hidden = true; },

  // guard runs an async action, showing its error instead of swallowing it.
  async guard(action) {
    App.clearError();
    try { return await action(); } catch (err) {
      if (err.name !== 'AbortError') App.showError(err);
      return undefined;
    }
  },

  // el builds an element: attrs are properties (on* as listeners); children are nodes or text.
  el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else if (k === 'class') node.className = v;
      else if (k === 'for') node.htmlFor = v;
      else if (k in node && typeof v !== 'string') node[k] = v;
      else node.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  },

  // table builds a table: columns are [header, row => cell] pairs.
  table(columns, rows, empty) {
    if (!rows.length) return App.el('p', { class: 'muted' }, empty || 'Nothing yet.');
    return App.el('table', {},
      App.el('thead', {}, App.el('tr', {}, columns.map(([h]) => App.el('th', { scope: 'col' }, h)))),
      App.el('tbody', {}, rows.map(r => App.el('tr', {}, columns.map(([, cell]) => App.el('td', {}, cell(r)))))));
  },

  // field is a labelled input; returns [label, input].
  field(id, label, attrs) {
    return [App.el('label', { for: id }, label), App.el('input', Object.assign({ id, name: id }, attrs || {}))];
  },

  time(t) { return t ? new Date(t).toLocaleString() : '—'; },
  json(v) { return JSON.stringify(v, null, 2); },

  leave: null,
  async render() {
    if (App.leave) { App.leave(); App.leave = null; }
    const view = document.getElementById('view');
    view.replaceChildren();
    App.clearError();
    const loggedIn = !!App.token();
    document.getElementById('login').hidden = loggedIn;
    document.getElementById('nav').hidden = !loggedIn;
    if (!loggedIn) return;
    const [name, ...params] = (location.hash.replace(/^#\/?/, '') || 'sources').split('/');
    for (const a of document.querySelectorAll('#nav a')) {
      a.toggleAttribute('aria-current', a.getAttribute('href') === '#/' + name);
      if (a.getAttribute('href') === '#/' + name) a.setAttribute('aria-current', 'page');
    }
    const screen = App.routes[name];
    if (!screen) { view.append(App.el('p', {}, 'No such page.')); return; }
    const leave = await App.guard(() => screen(view, params));
    if (typeof leave === 'function') App.leave = leave;
  },

  logout(message) {
    sessionStorage.removeItem(App.tokenKey);
    App.render();
    if (message) App.showError(message);
  },
};

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('login').addEventListener('submit', async (e) => {
    e.preventDefault();
    const input = document.getElementById('token');
    sessionStorage.setItem(App.tokenKey, input.value.trim());
    input.value = '';
    // Check the token before showing anything: a read of the sources.
    const ok = await App.guard(() => App.api('GET', '/api/sources?limit=1'));
    if (ok === undefined) { sessionStorage.removeItem(App.tokenKey); return; }
    if (!location.hash) location.hash = '#/sources';
    App.render();
  });
  document.getElementById('logout').addEventListener('click', () => App.logout());
  window.addEventListener('hashchange', App.render);
  App.render();
});
