/**
 * The console's page and stylesheet (console.ts serves them; the script is core/console/app.ts).
 * No inline script or style: the page's CSP allows only 'self'.
 */
export const CONSOLE_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ferry Console</title>
<!-- No /favicon.ico request: unauthenticated, it would count as a failed authentication against this address. -->
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/console/console.css">
<script type="module" src="/console/app.js"></script>
</head>
<body>
<header>
  <h1>Ferry Console</h1>
  <nav id="nav" hidden>
    <a href="#/dashboard" id="nav-dashboard">Dashboard</a>
    <a href="#/messages" id="nav-messages">Messages</a>
    <a href="#/routes" id="nav-routes">Routes</a>
  </nav>
  <span id="who"></span>
  <button type="button" id="signout" hidden>Sign out</button>
</header>
<div id="error" role="alert" hidden></div>
<main>
  <section id="view-signin" hidden>
    <h2>Sign in</h2>
    <form id="signin-form" autocomplete="off">
      <label for="token">API token</label>
      <input type="password" id="token" name="token" size="60" required>
      <button type="submit" id="signin">Sign in</button>
    </form>
    <div id="oidc" hidden>
      <p>or</p>
      <button type="button" id="oidc-signin">Sign in</button>
    </div>
    <p class="hint">The token is kept in this tab only (sessionStorage) and sent as <code>Authorization: Bearer</code>. Make one with <code>ferry token create</code>.</p>
  </section>

  <section id="view-dashboard" hidden>
    <h2>Dashboard <span class="updated" id="dash-updated"></span></h2>
    <div class="cards">
      <div class="card"><h3>Received / s <span class="sub" id="hour-received"></span></h3><div class="big" id="rate-received">–</div><svg id="spark-received" class="spark" viewBox="0 0 240 40" width="240" height="40" aria-label="messages received per minute, last hour"></svg></div>
      <div class="card"><h3>Delivered / s <span class="sub" id="hour-delivered"></span></h3><div class="big" id="rate-delivered">–</div><svg id="spark-delivered" class="spark" viewBox="0 0 240 40" width="240" height="40" aria-label="deliveries per minute, last hour"></svg></div>
      <div class="card"><h3>Store backlog</h3><table class="kv" id="backlog"></table></div>
      <div class="card"><h3>Messages by status</h3><table class="kv" id="msg-status"></table></div>
    </div>
    <h3>Sources</h3>
    <table class="grid" id="sources"><thead><tr><th>Source</th><th>Type</th><th>Ready</th><th>Msgs / s</th><th>Last hour</th><th>Last message</th><th>Failed</th><th>Stats</th></tr></thead><tbody></tbody></table>
    <h3>Sinks</h3>
    <table class="grid" id="sinks"><thead><tr><th>Sink</th><th>Circuit</th><th>In flight</th><th>Backlog</th><th>Delivered</th><th>Retried</th><th>Dead</th><th>Hold</th><th class="op">Action</th></tr></thead><tbody></tbody></table>
    <form id="hold-form" class="op" hidden>
      <h3>Hold sink <span id="hold-sink"></span></h3>
      <label for="hold-minutes">Minutes (empty: until released)</label> <input type="number" id="hold-minutes" min="1" size="6">
      <label for="hold-reason">Reason</label> <input type="text" id="hold-reason" size="40" maxlength="200">
      <button type="submit" id="hold-confirm">Hold</button> <button type="button" id="hold-cancel">Cancel</button>
    </form>
  </section>

  <section id="view-messages" hidden>
    <h2>Messages</h2>
    <form id="filter-form" class="filters">
      <label>Status <select id="f-status"><option value="">any</option><option>received</option><option>transformed</option><option>routed</option><option>delivered</option><option>unrouted</option><option>failed</option><option>dead</option></select></label>
      <label>Source <input id="f-source" size="10"></label>
      <label>Type <input id="f-type" size="10" placeholder="ADT^A0*"></label>
      <label>Control id <input id="f-control" size="12"></label>
      <label>Since <input id="f-since" type="datetime-local"></label>
      <label>Until <input id="f-until" type="datetime-local"></label>
      <label class="phi">Patient (MRN) <input id="f-patient" size="12"></label>
      <button type="submit" id="search">Search</button>
    </form>
    <div class="op bulk" id="bulk">
      <span id="sel-count">0 selected</span>
      <button type="button" id="bulk-replay" disabled>Replay selected…</button>
      <button type="button" id="bulk-retry" disabled>Retry dead deliveries of selected…</button>
      <button type="button" id="bulk-all">Replay all matching…</button>
      <span id="bulk-confirm" hidden><span id="bulk-count"></span> <button type="button" id="bulk-go">Confirm</button> <button type="button" id="bulk-cancel">Cancel</button></span>
      <span id="bulk-result" role="status"></span>
    </div>
    <table class="grid" id="messages"><thead><tr><th class="op sel"><input type="checkbox" id="sel-all" aria-label="select every message on the list"></th><th>Received</th><th>Status</th><th>Source</th><th>Type</th><th>Control id</th><th>Id</th></tr></thead><tbody></tbody></table>
    <button type="button" id="more" hidden>Older…</button>
  </section>

  <section id="view-routes" hidden>
    <h2>Routes</h2>
    <p class="hint">Counts: this instance since it started. Matched: the route's source and conditions matched; filtered: then one of its steps filtered the message out.</p>
    <table class="grid" id="routes"><thead><tr><th>Route</th><th>From</th><th>When</th><th>Steps</th><th>To</th><th>Matched</th><th>Filtered</th></tr></thead><tbody></tbody></table>
    <form id="tester" class="op" autocomplete="off">
      <h3>Route tester</h3>
      <p class="hint">Paste or upload a message: which routes take it (and for the others why not), what each step did, and the Bundle each sink would receive. Nothing is stored or delivered.</p>
      <textarea id="t-message" rows="8" spellcheck="false" aria-label="message to test"></textarea>
      <div class="filters">
        <label>Upload <input type="file" id="t-file"></label>
        <label>Source <select id="t-source"><option value="">(the only source, else "test")</option></select></label>
        <label>Content type <select id="t-type"><option value="">from the message</option><option>application/hl7-v2</option><option>application/fhir+json</option><option>application/json</option></select></label>
        <button type="submit" id="t-run">Test</button>
      </div>
    </form>
    <div id="t-result" class="op" aria-live="polite"></div>
  </section>

  <section id="view-detail" hidden>
    <h2>Message <code id="d-id"></code></h2>
    <div class="cols">
      <div><h3>Metadata</h3><table class="kv" id="d-meta"></table></div>
      <div><h3>Events</h3><ol id="d-events" class="timeline"></ol></div>
    </div>
    <h3>Deliveries</h3>
    <table class="grid" id="d-deliveries"><thead><tr><th>Route</th><th>Sink</th><th>Status</th><th>Attempts</th><th>Last error</th></tr></thead><tbody></tbody></table>
    <h3>Data-quality issues</h3>
    <ul id="d-issues"></ul>
    <h3>ACK sent</h3>
    <pre id="d-ack"></pre>
    <div class="op" id="d-actions">
      <button type="button" id="replay">Replay…</button>
      <button type="button" id="retry-dead">Retry dead deliveries…</button>
      <span id="replay-confirm" hidden><span id="replay-count"></span> <button type="button" id="replay-go">Confirm replay</button> <button type="button" id="replay-cancel">Cancel</button></span>
      <span id="replay-result"></span>
    </div>
    <div class="phi">
      <h3>Raw HL7 v2 <button type="button" id="copy-raw">Copy</button></h3>
      <div id="d-tree" class="tree"></div>
      <h3>Canonical Bundle</h3>
      <div id="d-bundle" class="bundle"></div>
    </div>
  </section>
</main>
</body>
</html>
`;

export const CONSOLE_CSS = `
:root { font-family: system-ui, sans-serif; font-size: 14px; color: #1b1f24; background: #f6f7f9; }
body { margin: 0; }
header { display: flex; align-items: center; gap: 1.5rem; padding: .5rem 1rem; background: #143d59; color: #fff; }
header h1 { font-size: 1.1rem; margin: 0; }
header a { color: #fff; margin-right: 1rem; }
header a[aria-current="page"] { font-weight: bold; text-decoration: none; }
#who { margin-left: auto; font-size: .9rem; }
main { padding: 1rem; max-width: 1400px; }
#error { background: #fde2e1; color: #8a1c14; padding: .5rem 1rem; }
.hint { color: #555; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1rem; }
.card { background: #fff; border: 1px solid #d8dde3; border-radius: 4px; padding: .5rem .75rem; min-height: 110px; }
.card h3 { margin: 0 0 .25rem; font-size: .9rem; color: #445; }
.big { font-size: 1.6rem; font-variant-numeric: tabular-nums; min-height: 2rem; }
.spark { display: block; }
.spark.small { display: inline-block; vertical-align: middle; }
.sub { font-weight: normal; color: #667; font-size: .8rem; }
td.failed { color: #b42318; font-weight: bold; }
.spark polyline { fill: none; stroke: #1f6feb; stroke-width: 1.5; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
table.grid { width: 100%; background: #fff; table-layout: fixed; }
table.grid th, table.grid td { border-bottom: 1px solid #e3e6ea; padding: .3rem .5rem; text-align: left; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
table.grid tbody tr:hover { background: #eef4fb; }
table.kv td { padding: .1rem .5rem .1rem 0; }
table.kv td:last-child { text-align: right; min-width: 4ch; }
.state-open, .state-half-open, .held { color: #b42318; font-weight: bold; }
table.grid td.held { white-space: normal; }
.filters { display: flex; flex-wrap: wrap; gap: .5rem 1rem; align-items: end; margin-bottom: .75rem; }
.filters label { display: flex; flex-direction: column; font-size: .8rem; }
.cols { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; }
.timeline li { margin-bottom: .2rem; }
.tree { background: #fff; border: 1px solid #d8dde3; padding: .5rem; font-family: ui-monospace, monospace; font-size: 13px; }
.tree details { margin-left: .5rem; }
.tree .pos { color: #0b5394; display: inline-block; min-width: 7ch; }
pre { background: #fff; border: 1px solid #d8dde3; padding: .5rem; overflow: auto; max-height: 480px; }
body:not(.role-operator) .op { display: none !important; }
body:not(.role-phi-reader) .phi { display: none !important; }
button { cursor: pointer; }
.bundle .entry { margin: .25rem 0; }
.bundle .entry > summary { font-family: ui-monospace, monospace; cursor: pointer; }
.bundle .entry.target > summary { background: #fff3c4; }
.bundle pre { max-height: none; margin: .25rem 0; }
.bundle a.ref { color: #0b5394; }
.tree .fname { color: #445; }
#t-message { width: 100%; box-sizing: border-box; font-family: ui-monospace, monospace; font-size: 13px; }
.route-result { background: #fff; border: 1px solid #d8dde3; border-radius: 4px; padding: .4rem .75rem; margin: .5rem 0; }
.route-result.nomatch { color: #556; }
.route-result .verdict { font-weight: bold; }
table.grid td.wrap { white-space: normal; }
.bulk { display: flex; flex-wrap: wrap; gap: .5rem; align-items: center; margin-bottom: .5rem; min-height: 2rem; }
table.grid th.sel, table.grid td.sel { width: 2.5rem; }
`;
