// Leasehold's live view (served by src/ops/ui.rs; no build step).
//
// Read-only. It reads two things from the node that served it:
// - /ui/api/cluster: members, leader, term, indexes and `sm_now`, the
//   state machine time that expiry countdowns are computed against (so the
//   browser's clock skew does not show);
// - the Kubernetes Lease API: a LIST (following `continue`), then a WATCH
//   from the list's resourceVersion with bookmarks; a 410 (history
//   compacted, or this watcher fell behind) means list again.
//
// Every value reaches the page through `textContent` (or `dataset`):
// holders, names and labels are chosen by clients and are never parsed as
// markup.
//
// `?once=1` (for tests and screenshots): list, replay a bounded stretch of
// recent changes (a watch with `timeoutSeconds=1`), render once, then set
// `document.body.dataset.ready = "1"`. No timers, no open stream.
'use strict';

(function () {
  const LEASES = '/apis/coordination.k8s.io/v1/leases';
  const PAGE = 500;
  // A bound on the pages one LIST reads (100 000 leases).
  const MAX_PAGES = 200;
  // Rows drawn at most; the rest is counted.
  const MAX_ROWS = 2000;
  const MAX_CHANGES = 100;
  // Revisions before the list replayed into the change stream at start.
  const REPLAY = 100;
  // A watch line longer than this is a broken stream, not an event.
  const MAX_LINE = 4 * 1024 * 1024;
  const CLUSTER_EVERY_MS = 2000;
  const TICK_MS = 250;
  const TOKEN_KEY = 'leasehold.ui.token';

  const once = new URLSearchParams(location.search).get('once') === '1';

  const state = {
    leases: new Map(), // "namespace/name" -> Lease
    listRv: 0, // resourceVersion of the last LIST
    rv: 0, // highest resourceVersion seen since
    changes: [], // newest first, at most MAX_CHANGES
    seen: new Map(), // "namespace/name" -> the Lease as of the last change shown
    skewMs: 0, // sm_now minus the browser clock
    truncated: false,
    dirty: false, // changed since the last render
    live: false, // a live watch is open
    clusterId: '', // the cluster this page shows
  };

  class AuthNeeded extends Error {}
  class Gone extends Error {}

  // ---- DOM, text only ------------------------------------------------------

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  function setConn(text, cls) {
    const c = byId('conn');
    c.textContent = text;
    c.className = 'conn ' + (cls || '');
  }

  function showError(e) {
    const p = byId('error');
    if (!e) {
      p.hidden = true;
      p.textContent = '';
      return;
    }
    p.hidden = false;
    p.textContent = String(e && e.message ? e.message : e);
  }

  // ---- requests ------------------------------------------------------------

  function token() {
    try {
      return sessionStorage.getItem(TOKEN_KEY) || '';
    } catch (_) {
      return '';
    }
  }

  function headers() {
    const h = { Accept: 'application/json' };
    const t = token();
    if (t) h.Authorization = 'Bearer ' + t;
    return h;
  }

  async function message(r) {
    try {
      const v = await r.json();
      return (v && v.message) || r.statusText;
    } catch (_) {
      return r.statusText;
    }
  }

  async function request(path) {
    const r = await fetch(path, { headers: headers(), cache: 'no-store', credentials: 'same-origin' });
    if (r.status === 401) throw new AuthNeeded(await message(r));
    if (r.status === 410) throw new Gone(await message(r));
    if (!r.ok) throw new Error(path.split('?')[0] + ': HTTP ' + r.status + ': ' + (await message(r)));
    return r;
  }

  async function getJson(path) {
    return (await request(path)).json();
  }

  // ---- data ----------------------------------------------------------------

  function key(l) {
    const m = (l && l.metadata) || {};
    return (m.namespace || '') + '/' + (m.name || '');
  }

  function rvOf(l) {
    const n = Number(l && l.metadata && l.metadata.resourceVersion);
    return Number.isFinite(n) ? n : 0;
  }

  // MicroTime ("2026-12-02T18:00:00.123456Z") to milliseconds since the epoch.
  function ms(t) {
    if (typeof t !== 'string' || !t) return NaN;
    return Date.parse(t.replace(/(\.\d{3})\d+/, '$1'));
  }

  function smNow() {
    return Date.now() + state.skewMs;
  }

  async function loadCluster() {
    const t0 = Date.now();
    const c = await getJson('/ui/api/cluster');
    const t1 = Date.now();
    const sm = ms(c.sm_now);
    if (Number.isFinite(sm)) state.skewMs = sm - (t0 + t1) / 2;
    // Another cluster answers at this address now (restored, or rebuilt):
    // its revisions are not ours, so start over.
    if (state.clusterId && c.cluster_id && c.cluster_id !== state.clusterId && !once) {
      location.reload();
      return;
    }
    if (c.cluster_id) state.clusterId = c.cluster_id;
    renderCluster(c);
  }

  // Every lease, page by page. Pages are read at increasing revisions and
  // all report the first page's resourceVersion, so a watch from it may
  // repeat a change (never miss one); `onEvent` drops what is not newer.
  async function list() {
    const leases = new Map();
    let cont = '';
    let rv = 0;
    let truncated = false;
    for (let page = 0; ; page++) {
      if (page === MAX_PAGES) {
        truncated = true;
        break;
      }
      let path = LEASES + '?limit=' + PAGE;
      if (cont) path += '&continue=' + encodeURIComponent(cont);
      const l = await getJson(path);
      const meta = l.metadata || {};
      if (page === 0) rv = Number(meta.resourceVersion) || 0;
      for (const item of l.items || []) leases.set(key(item), item);
      cont = meta.continue || '';
      if (!cont) break;
    }
    state.leases = leases;
    state.listRv = rv;
    state.rv = rv;
    state.truncated = truncated;
    state.dirty = true;
    // How many lists this page made (a relist after a 410 adds one).
    document.body.dataset.lists = String(Number(document.body.dataset.lists || 0) + 1);
  }

  // Reads a watch line by line until the server ends it; `onEvent` throws
  // Gone on a 410 ERROR event.
  async function watch(from, timeoutSeconds) {
    let path = LEASES + '?watch=1&allowWatchBookmarks=true&resourceVersion=' + from;
    if (timeoutSeconds) path += '&timeoutSeconds=' + timeoutSeconds;
    const r = await fetch(path, { headers: headers(), cache: 'no-store', credentials: 'same-origin' });
    if (r.status === 401) throw new AuthNeeded(await message(r));
    if (r.status === 410) throw new Gone(await message(r));
    if (!r.ok) throw new Error('watch: HTTP ' + r.status + ': ' + (await message(r)));
    if (timeoutSeconds) {
      // A bounded watch is read whole: headless Chromium's virtual time
      // waits for a response body, not for a stream being read.
      for (const line of (await r.text()).split('\n')) {
        if (line.trim()) onEvent(JSON.parse(line));
      }
      return;
    }
    state.live = true;
    showError(null);
    setConn('live at revision ' + state.rv, 'live');
    const reader = r.body.getReader();
    const decoder = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (line.trim()) onEvent(JSON.parse(line));
        }
        if (buf.length > MAX_LINE) throw new Error('watch: a line longer than ' + MAX_LINE + ' bytes');
      }
    } finally {
      state.live = false;
      reader.cancel().catch(() => {});
    }
  }

  function onEvent(ev) {
    const obj = (ev && ev.object) || {};
    const rv = rvOf(obj);
    switch (ev && ev.type) {
      case 'BOOKMARK':
        if (rv > state.rv) state.rv = rv;
        return;
      case 'ERROR':
        if (obj.code === 410) throw new Gone(obj.message || 'resourceVersion too old');
        throw new Error('watch: ' + (obj.message || 'error event'));
      case 'ADDED':
      case 'MODIFIED':
      case 'DELETED':
        break;
      default:
        return;
    }
    record(ev.type, obj, rv);
    // Changes up to the list's revision are in the list already (they are
    // replayed only for the change stream).
    if (rv > state.listRv) {
      const k = key(obj);
      const cur = state.leases.get(k);
      if (!cur || rv > rvOf(cur)) {
        if (ev.type === 'DELETED') state.leases.delete(k);
        else state.leases.set(k, obj);
      }
    }
    if (rv > state.rv) state.rv = rv;
    state.dirty = true;
  }

  // What a change did, from the lease before it (when this page saw it).
  function classify(type, obj, prev) {
    if (type === 'DELETED') return 'DELETED';
    const sp = obj.spec || {};
    const st = obj.status || {};
    const holder = sp.holderIdentity || '';
    if (st.expired && !(prev && prev.status && prev.status.expired)) return 'EXPIRED';
    if (!prev) {
      if (!holder) return type === 'ADDED' ? 'CREATED' : 'MODIFIED';
      return sp.acquireTime && sp.acquireTime === sp.renewTime ? 'ACQUIRED' : 'RENEWED';
    }
    const pp = prev.spec || {};
    const ps = prev.status || {};
    const pholder = pp.holderIdentity || '';
    if (holder && (holder !== pholder || st.fencingToken !== ps.fencingToken)) return 'ACQUIRED';
    if (!holder && pholder) return 'RELEASED';
    if (holder && sp.renewTime !== pp.renewTime) return 'RENEWED';
    return 'MODIFIED';
  }

  function record(type, obj, rv) {
    const k = key(obj);
    const prev = state.seen.get(k);
    if (prev && rvOf(prev) >= rv) return; // a repeat (paged list)
    const kind = classify(type, obj, prev);
    if (type === 'DELETED') state.seen.delete(k);
    else state.seen.set(k, obj);
    const sp = obj.spec || {};
    const st = obj.status || {};
    let at = '';
    if (kind === 'EXPIRED') at = st.expireTime || '';
    else if (kind === 'ACQUIRED' || kind === 'RENEWED') at = sp.renewTime || '';
    state.changes.unshift({
      kind,
      key: k,
      holder: sp.holderIdentity || '',
      token: st.fencingToken,
      rv,
      at,
    });
    if (state.changes.length > MAX_CHANGES) state.changes.length = MAX_CHANGES;
  }

  // ---- rendering -----------------------------------------------------------

  function renderCluster(c) {
    const dl = byId('cluster');
    const rows = [
      ['this node', c.node_id + ' (' + String(c.state).toLowerCase() + ')'],
      ['leader', c.leader_id ? c.leader_id + ' at ' + c.leader_address : 'none known'],
      ['term', c.term],
      ['commit index', c.commit_index],
      ['applied index', c.applied_index],
      ['last log index', c.last_log_index],
      ['snapshot index', c.snapshot_index],
      ['revision', c.revision],
      ['cluster id', c.cluster_id || '-'],
    ];
    const items = [];
    for (const [name, value] of rows) {
      items.push(el('dt', name));
      const dd = el('dd', value);
      dd.dataset.field = name;
      items.push(dd);
    }
    dl.replaceChildren(...items);
    const body = byId('members').tBodies[0];
    const trs = [];
    for (const m of c.members || []) {
      const tr = el('tr');
      tr.dataset.member = String(m.id);
      tr.append(
        el('td', m.id, 'num'),
        el('td', m.address),
        el('td', m.role),
        el('td', c.state === 'LEADER' ? m.matched_index : '-', 'num'),
      );
      const marks = [];
      if (m.id === c.leader_id) marks.push('leader');
      if (m.id === c.node_id) marks.push('this node');
      tr.append(el('td', marks.join(', '), m.id === c.leader_id ? 'leader' : 'muted'));
      trs.push(tr);
    }
    body.replaceChildren(...trs);
  }

  function seconds(msLeft) {
    const s = Math.abs(msLeft) / 1000;
    if (s < 60) return s.toFixed(1) + ' s';
    const m = Math.floor(s / 60);
    if (m < 60) return m + ' m ' + String(Math.floor(s % 60)).padStart(2, '0') + ' s';
    return Math.floor(m / 60) + ' h ' + String(m % 60).padStart(2, '0') + ' m';
  }

  // The lease's state and its countdown text at state machine time `now`.
  function standing(l, now) {
    const sp = l.spec || {};
    const st = l.status || {};
    if (!sp.holderIdentity) return ['free', '-'];
    const left = ms(st.expireTime) - now;
    if (st.expired) return ['expired', Number.isFinite(left) ? seconds(left) + ' ago' : ''];
    if (!Number.isFinite(left)) return ['held', ''];
    if (left <= 0) return ['due', 'due ' + seconds(left) + ' ago'];
    return ['held', seconds(left)];
  }

  function renderLeases() {
    const now = smNow();
    const byNs = new Map();
    for (const [k, l] of state.leases) {
      const ns = (l.metadata && l.metadata.namespace) || '';
      if (!byNs.has(ns)) byNs.set(ns, []);
      byNs.get(ns).push([k, l]);
    }
    const out = [];
    let drawn = 0;
    for (const ns of [...byNs.keys()].sort()) {
      const rows = byNs.get(ns).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
      const h = el('h3', ns + ' ');
      h.append(el('span', '(' + rows.length + ')', 'count'));
      out.push(h);
      const table = el('table');
      table.dataset.namespace = ns;
      const head = el('tr');
      for (const t of ['name', 'holder', 'token', 'expires in', 'state']) head.append(el('th', t));
      const thead = el('thead');
      thead.append(head);
      table.append(thead);
      const body = el('tbody');
      for (const [k, l] of rows) {
        if (drawn === MAX_ROWS) break;
        drawn++;
        const sp = l.spec || {};
        const st = l.status || {};
        const [what, left] = standing(l, now);
        const tr = el('tr');
        tr.dataset.lease = k;
        tr.dataset.state = what;
        const cd = el('td', left, 'countdown');
        cd.dataset.expire = st.expireTime || '';
        tr.append(
          el('td', l.metadata.name),
          el('td', sp.holderIdentity || '', 'holder'),
          el('td', sp.holderIdentity ? st.fencingToken : '', 'token'),
          cd,
          el('td', what, 'state'),
        );
        body.append(tr);
      }
      table.append(body);
      out.push(table);
    }
    let count = state.leases.size + (state.leases.size === 1 ? ' lease' : ' leases');
    count += ' in ' + byNs.size + (byNs.size === 1 ? ' namespace' : ' namespaces');
    if (drawn < state.leases.size) count += ', first ' + drawn + ' shown';
    if (state.truncated) count += ' (list cut at ' + MAX_PAGES * PAGE + ')';
    byId('lease-count').textContent = count;
    if (!out.length) out.push(el('p', 'No leases.', 'muted'));
    byId('leases').replaceChildren(...out);
  }

  // Between changes only the countdowns move.
  function tick() {
    const now = smNow();
    for (const tr of byId('leases').querySelectorAll('tr[data-lease]')) {
      const l = state.leases.get(tr.dataset.lease);
      if (!l) continue;
      const [what, left] = standing(l, now);
      tr.dataset.state = what;
      tr.querySelector('.countdown').textContent = left;
      tr.querySelector('.state').textContent = what;
    }
  }

  function renderChanges() {
    const items = [];
    for (const c of state.changes) {
      const li = el('li');
      li.dataset.kind = c.kind;
      li.dataset.lease = c.key;
      // The time of day (UTC) the change took effect, where the lease says.
      const hms = /T(\d\d:\d\d:\d\d)/.exec(c.at);
      li.append(el('span', hms ? hms[1] : '', 'time'), el('span', c.kind, 'kind'));
      if (c.kind === 'RELISTED') li.append(el('span', 'missed changes before this; listed again', 'muted'));
      else li.append(el('span', c.key, 'lease'));
      if (c.holder) li.append(el('span', c.holder, 'holder'));
      if (c.kind === 'ACQUIRED' && c.token !== undefined) li.append(el('span', 'token ' + c.token, 'tok'));
      li.append(el('span', 'rev ' + c.rv, 'rev'));
      items.push(li);
    }
    if (!items.length) items.push(el('li', 'No changes yet.', 'muted'));
    byId('changes').replaceChildren(...items);
  }

  function render() {
    state.dirty = false;
    if (state.live) setConn('live at revision ' + state.rv, 'live');
    renderLeases();
    renderChanges();
  }

  // ---- credentials ---------------------------------------------------------

  function askToken(why) {
    setConn('sign-in needed', 'down');
    byId('auth').hidden = false;
    byId('auth-why').textContent = why || 'This node asks for a credential.';
  }

  function wireAuth() {
    byId('auth-form').addEventListener('submit', (e) => {
      e.preventDefault();
      const t = byId('auth-token').value.trim();
      try {
        if (t) sessionStorage.setItem(TOKEN_KEY, t);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) {
        // No session storage (a private window): the token cannot be kept.
      }
      location.reload();
    });
  }

  // ---- the two modes -------------------------------------------------------

  // Where the first watch starts: a little before the list, so the change
  // stream shows recent history (those changes are not applied again).
  // Revision 1 itself cannot be replayed: a watch starts after the
  // revision it names, and `resourceVersion=0` means "list first".
  function replayFrom() {
    return state.listRv > REPLAY ? state.listRv - REPLAY : Math.min(1, state.listRv);
  }

  async function runOnce() {
    try {
      await loadCluster();
      await list();
      try {
        await watch(replayFrom(), 1);
      } catch (e) {
        if (!(e instanceof Gone)) throw e;
        // The history no longer holds the replay's start: the list stands.
      }
      setConn('snapshot at revision ' + state.rv);
    } catch (e) {
      if (e instanceof AuthNeeded) askToken(e.message);
      else showError(e);
    }
    render();
    document.body.dataset.ready = '1';
  }

  function sleep(msecs) {
    return new Promise((resolve) => setTimeout(resolve, msecs));
  }

  async function clusterLoop() {
    for (;;) {
      try {
        await loadCluster();
      } catch (e) {
        if (e instanceof AuthNeeded) return askToken(e.message);
        const dl = byId('cluster');
        dl.replaceChildren(el('dt', 'status'), el('dd', 'unavailable: ' + e.message));
      }
      await sleep(CLUSTER_EVERY_MS);
    }
  }

  async function runLive() {
    clusterLoop();
    setInterval(() => (state.dirty ? render() : tick()), TICK_MS);
    let needList = true;
    let from = 0;
    let backoff = 500;
    for (;;) {
      try {
        if (needList) {
          setConn('listing');
          await list();
          if (from !== 0) {
            // The history no longer held our place: the changes in between
            // are not known, only the state after them.
            state.changes.unshift({ kind: 'RELISTED', key: '', holder: '', rv: state.listRv, at: '' });
            if (state.changes.length > MAX_CHANGES) state.changes.length = MAX_CHANGES;
          }
          render();
          document.body.dataset.ready = '1';
          from = from === 0 ? replayFrom() : state.listRv;
          needList = false;
        }
        setConn('watching from revision ' + from);
        await watch(from, 0);
        // The server ended the watch (its timeout, or it stopped): resume.
        from = state.rv;
        backoff = 500;
      } catch (e) {
        if (e instanceof AuthNeeded) return askToken(e.message);
        if (e instanceof Gone) {
          // The replay reached back too far: watch from the list instead.
          // Otherwise the history moved past us: list again.
          if (from < state.listRv) from = Math.max(state.listRv, state.rv);
          else needList = true;
          continue;
        }
        showError(e);
        setConn('reconnecting', 'down');
        from = Math.max(from, state.rv);
        await sleep(backoff);
        backoff = Math.min(backoff * 2, 10000);
      }
    }
  }

  function main() {
    wireAuth();
    if (once) runOnce();
    else runLive();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main);
  else main();
})();
