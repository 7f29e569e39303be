// Loaded by the tier's pages after the official client's browser build
// (window.io): what a browser developer's own code would do, written the
// way the README's "Connect from a browser" shows it, with every event
// recorded for the scenario to read and the page's state shown on the page
// itself, so that a screenshot shows (and checks) what the page knew.
window.tier = (() => {
  const events = [];
  const counts = {};
  const transports = [];

  function show(key, value) {
    let row = document.getElementById(`state-${key}`);
    if (!row) {
      row = document.createElement('div');
      row.id = `state-${key}`;
      document.getElementById('state').appendChild(row);
    }
    row.textContent = `${key}: ${value}`;
  }

  function note(line) {
    document.getElementById('log').textContent += `${line}\n`;
  }

  function count(name) {
    counts[name] = (counts[name] ?? 0) + 1;
    show(name, counts[name]);
  }

  function record(name, payload) {
    events.push({ name, payload });
    note(`← ${name} ${JSON.stringify(payload)}`);
  }

  /** `io(url, {auth: {token}})` with quick reconnects; the socket is `window.socket`. */
  function connect(url, token, options = {}) {
    const socket = io(url, {
      auth: { token },
      reconnectionDelay: 200,
      reconnectionDelayMax: 1000,
      ...options,
    });
    window.socket = socket;
    socket.onAny(record);
    socket.on('connect', () => show('socket', 'connected'));
    socket.on('connect_error', (err) => {
      record('connect_error', { message: err.message });
      show('socket', `connect_error: ${err.message}`);
    });
    socket.on('disconnect', (reason) => {
      record('disconnect', reason);
      show('socket', `disconnected: ${reason}`);
    });
    socket.io.on('open', () => {
      const engine = socket.io.engine;
      transports.push(engine.transport.name);
      show('transport', engine.transport.name);
      engine.on('upgrade', (transport) => {
        transports.push(transport.name);
        show('transport', `${transport.name} (upgraded)`);
        count('upgrades');
      });
    });
    return socket;
  }

  async function emit(event, payload) {
    const reply = await window.socket.timeout(5000).emitWithAck(event, payload);
    note(`→ ${event} ${JSON.stringify(payload)}: ${JSON.stringify(reply)}`);
    return reply;
  }

  /**
   * A REST call from the page: `{status, json, retryAfter}`, or `{error}`
   * when the browser refused it (a CORS failure is a TypeError to the page).
   */
  async function api(url, method, path, { token, body } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    try {
      const r = await fetch(url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      const answer = { status: r.status, json: text ? JSON.parse(text) : null, retryAfter: r.headers.get('Retry-After') };
      note(`${method} ${path}: ${r.status} retry-after=${answer.retryAfter}`);
      return answer;
    } catch (e) {
      note(`${method} ${path}: ${e.name}: ${e.message}`);
      return { error: `${e.name}: ${e.message}` };
    }
  }

  return { events, counts, transports, show, note, count, connect, emit, api };
})();
