// overseer ui: one page, three views behind hash routes (#/, #/graph/ID, #/graph/ID/job/NAME).
// Every string from the server (names, args, errors, tracebacks, log lines) goes into the
// page as text (textContent, createElement), never as markup. No inline script or style.
"use strict";
(() => {
  const POLL_MS = 2000;
  const TABLE_PAGE = 50;
  const GRAPHS_PAGE = 50;
  const ENDED = new Set(["finished", "failed", "aborted"]);
  const JOB_STATUSES = ["waiting", "ready", "running", "finished", "failed", "aborted"];
  const GRAPH_STATUSES = ["creating", "running", "finished", "failed", "aborted"];
  // The order "sort by status" uses: what needs attention first.
  const STATUS_RANK = { failed: 0, running: 1, ready: 2, waiting: 3, aborted: 4, finished: 5 };
  const SVG = "http://www.w3.org/2000/svg";

  const page = document.getElementById("page");
  const crumbs = document.getElementById("crumbs");
  const live = document.getElementById("live");
  const notice = document.getElementById("notice");

  // The current view's generation: a view's timers and late answers stop when it changes.
  let generation = 0;
  let pollTimer = null;

  // -- building the page (text only) -------------------------------------------------------
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "className") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else if (key === "onclick") node.addEventListener("click", value);
      else if (key === "onchange") node.addEventListener("change", value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function badge(status) {
    return el("span", { className: `badge status-${status}`, text: status || "?" });
  }

  function link(href, text) {
    return el("a", { href, text });
  }

  function graphHref(graphId) {
    return `#/graph/${encodeURIComponent(graphId)}`;
  }

  function jobHref(graphId, name) {
    return `#/graph/${encodeURIComponent(graphId)}/job/${encodeURIComponent(name)}`;
  }

  function setCrumbs(...parts) {
    crumbs.replaceChildren(...parts.flatMap((part, i) => (i ? [" / ", part] : [part])));
  }

  function say(message, isError) {
    notice.textContent = message || "";
    notice.classList.toggle("hidden", !message);
    notice.classList.toggle("error", Boolean(isError));
  }

  function setLive(on, text) {
    live.textContent = text || "";
    live.classList.toggle("on", Boolean(on));
  }

  // -- time -------------------------------------------------------------------------------
  function seconds(job) {
    // Only a running job's time still counts; a job taken back by a rerun has none yet.
    if (!job.started_at || (!job.finished_at && job.status !== "running")) return null;
    const end = job.finished_at ? Date.parse(job.finished_at) : Date.now();
    return Math.max(0, (end - Date.parse(job.started_at)) / 1000);
  }

  function duration(value) {
    if (value === null || value === undefined) return "";
    if (value < 10) return `${value.toFixed(2)} s`;
    if (value < 120) return `${value.toFixed(1)} s`;
    if (value < 7200) return `${Math.floor(value / 60)} min ${Math.round(value % 60)} s`;
    return `${(value / 3600).toFixed(1)} h`;
  }

  function when(stamp) {
    if (!stamp) return "";
    const date = new Date(stamp);
    return Number.isNaN(date.getTime()) ? String(stamp) : date.toLocaleString();
  }

  function size(bytes) {
    if (bytes === null || bytes === undefined) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = Number(bytes);
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit ? `${value.toFixed(1)} ${units[unit]}` : `${value} B`;
  }

  // -- the server ------------------------------------------------------------------------
  async function api(path, options) {
    const response = await fetch(path, { credentials: "same-origin", cache: "no-store", ...options });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const message = (body && body.error) || `${response.status} ${response.statusText}`;
      const error = new Error(response.status === 403
        ? `${message} (open the address \`overseer ui\` printed again)` : message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  function post(path, body) {
    return api(path, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body || {}),
    });
  }

  function enc(value) {
    return encodeURIComponent(value);
  }

  // -- routes -----------------------------------------------------------------------------
  function route() {
    generation += 1;
    clearTimeout(pollTimer);
    setLive(false, "");
    say("");
    const hash = location.hash.replace(/^#/, "") || "/";
    const [path, query] = hash.split("?");
    const params = new URLSearchParams(query || "");
    const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
    const mine = generation;
    let shown;
    if (parts[0] === "graph" && parts.length === 2) shown = showGraph(parts[1], mine);
    else if (parts[0] === "graph" && parts[2] === "job" && parts.length === 4) shown = showJob(parts[1], parts[3], mine);
    else shown = showGraphs(params, mine);
    shown.catch((error) => {
      if (mine !== generation) return;
      page.replaceChildren(el("p", { className: "muted", text: "Nothing to show." }));
      say(error.message, true);
    });
  }

  function stillShown(mine) {
    return mine === generation;
  }

  // A page's read: its answer, or undefined when the page has changed meanwhile or the read
  // failed (then the error is shown and the read tried again at the next poll).
  async function readOrRetry(mine, step, read) {
    let answer;
    try {
      answer = await read();
    } catch (error) {
      if (!stillShown(mine)) return undefined;
      say(error.message, true);
      schedule(mine, step);
      return undefined;
    }
    return stillShown(mine) ? answer : undefined;
  }

  function schedule(mine, step) {
    if (!stillShown(mine)) return;
    clearTimeout(pollTimer);
    pollTimer = setTimeout(() => { if (stillShown(mine)) step(); }, POLL_MS);
  }

  // -- the graphs -------------------------------------------------------------------------
  async function showGraphs(params, mine) {
    setCrumbs(el("span", { text: "graphs" }));
    const status = params.get("status") || "";
    const after = params.get("after") || "";
    const query = new URLSearchParams({ limit: String(GRAPHS_PAGE) });
    if (status) query.set("status", status);
    if (after) query.set("after", after);
    const answer = await api(`/api/graphs?${query}`);
    if (!stillShown(mine)) return;

    const filter = el("select", {
      id: "graph-status-filter",
      onchange: (event) => {
        const value = event.target.value;
        location.hash = value ? `#/?status=${enc(value)}` : "#/";
      },
    }, el("option", { value: "", text: "every status" }),
    GRAPH_STATUSES.map((s) => el("option", { value: s, text: s, selected: s === status ? "selected" : null })));

    const rows = (answer.graphs || []).map((graph) => {
      const counts = graph.counts || {};
      const done = ["finished", "failed", "aborted"].reduce((sum, s) => sum + (counts[s] || 0), 0);
      return el("tr", { "data-graph": graph.graph_id },
        el("td", { className: "name-cell" }, link(graphHref(graph.graph_id), graph.graph_id)),
        el("td", {}, badge(graph.status)),
        el("td", { className: "num", text: `${done}/${graph.jobs_total}` }),
        el("td", { className: "num", text: counts.failed || "" }),
        el("td", { text: when(graph.created_at) }),
        el("td", { text: graph.finished_at ? when(graph.finished_at) : "" }),
        el("td", { className: "muted", text: graph.reason || "" }));
    });
    const table = el("table", { id: "graphs-table" },
      el("thead", {}, el("tr", {}, ["graph", "status", "ended", "failed", "created", "finished", "reason"]
        .map((name) => el("th", { text: name })))),
      el("tbody", {}, rows));

    const pager = el("div", { className: "pager" },
      after ? el("button", { text: "← newest", onclick: () => { location.hash = status ? `#/?status=${enc(status)}` : "#/"; } }) : null,
      answer.next ? el("button", {
        id: "graphs-next", text: "older →",
        onclick: () => {
          const next = new URLSearchParams({ after: answer.next });
          if (status) next.set("status", status);
          location.hash = `#/?${next}`;
        },
      }) : null);

    page.replaceChildren(
      el("h1", { text: "Graphs" }),
      el("div", { className: "toolbar" }, el("label", { text: "Status " }, filter), el("span", { className: "grow" }),
        el("span", { className: "muted", text: "newest first" })),
      rows.length ? table : el("p", { className: "muted", text: status ? `No ${status} graphs.` : "No graphs yet." }),
      pager);
  }

  // -- one graph --------------------------------------------------------------------------
  async function showGraph(graphId, mine) {
    setCrumbs(link("#/", "graphs"), el("span", { text: graphId }));
    const view = {
      graphId, graph: null, jobs: new Map(), collapsed: false, typeEdges: [], cursor: null,
      sort: { key: "status", descending: false }, filter: "", tablePage: 0, nodes: new Map(),
    };
    const title = el("h1", {}, el("span", { text: graphId }));
    const actions = el("div", { className: "toolbar" });
    const facts = el("div", { className: "muted" });
    const counts = el("div", { className: "counts", id: "counts" });
    const progress = el("div", { className: "progress" });
    const dag = el("div", { className: "dag", id: "dag" });
    const legend = el("div", { className: "legend" }, JOB_STATUSES.map((s) =>
      el("span", {}, el("span", { className: `swatch status-${s}` }), s)));
    const tableBox = el("div", { id: "jobs" });
    page.replaceChildren(title, facts, actions, counts, progress, el("h2", { text: "Graph" }), legend, dag,
      el("h2", { text: "Jobs" }), tableBox);

    actions.append(
      el("button", {
        id: "rerun-graph", className: "primary", text: "Rerun failed jobs",
        onclick: () => act(`rerun the failed and aborted jobs of graph ${graphId}?`,
          () => post(`/api/graphs/${enc(graphId)}/rerun`, {}), (r) => `${r.jobs_rerun} jobs to run again`, refreshNow),
      }),
      el("button", {
        id: "cancel-graph", className: "danger", text: "Cancel graph",
        onclick: () => act(`cancel graph ${graphId}? Its jobs that have not ended are aborted.`,
          () => post(`/api/graphs/${enc(graphId)}/cancel`, {}), (r) => `${r.jobs_aborted} jobs aborted`, refreshNow),
      }));

    function refreshNow() {
      view.cursor = null; // a full read: a rerun may change many jobs
      refresh();
    }

    async function refresh() {
      const since = view.cursor ? `?since=${enc(view.cursor)}` : "";
      const state = await readOrRetry(mine, refresh, () => api(`/api/graphs/${enc(graphId)}/state${since}`));
      if (state === undefined) return;
      const wasEnded = view.graph && ENDED.has(view.graph.status);
      view.graph = state.graph;
      let relayout = state.complete;
      if (state.complete) {
        view.jobs = new Map(state.jobs.map((job) => [job.name, job]));
        view.collapsed = state.collapsed;
        view.typeEdges = state.type_edges || [];
      } else {
        for (const job of state.jobs) {
          const known = view.jobs.get(job.name);
          // A new job (an expansion's child) changes the drawing: read it all again.
          if (!known) { view.cursor = null; schedule(mine, refresh); relayout = false; break; }
          view.jobs.set(job.name, { ...known, ...job, deps: known.deps });
        }
      }
      if (view.cursor !== null || state.complete) view.cursor = state.cursor;
      drawHeader();
      if (relayout) drawDag(); else paintDag();
      drawTable();
      const ended = ENDED.has(view.graph.status);
      if (!ended) {
        setLive(true, "live");
        schedule(mine, refresh);
      } else if (!state.complete) {
        // Ended since the last look: one full read, so the end state shown is exact.
        view.cursor = null;
        refresh();
      } else {
        setLive(false, wasEnded ? "" : "ended");
      }
    }

    function tally() {
      const found = Object.fromEntries(JOB_STATUSES.map((s) => [s, 0]));
      for (const job of view.jobs.values()) found[job.status] = (found[job.status] || 0) + 1;
      return found;
    }

    function drawHeader() {
      const graph = view.graph;
      title.replaceChildren(el("span", { text: graph.graph_id }), badge(graph.status));
      title.setAttribute("data-status", graph.status);
      const argsText = graph.args && Object.keys(graph.args).length ? `args ${JSON.stringify(graph.args)}` : "";
      facts.replaceChildren([
        `${graph.jobs_total} jobs`,
        graph.created_at ? `created ${when(graph.created_at)}` : "",
        graph.finished_at ? `ended ${when(graph.finished_at)}` : "",
        graph.reason ? `reason: ${graph.reason}` : "",
        argsText,
      ].filter(Boolean).join(" · "));
      const found = tally();
      counts.replaceChildren(...JOB_STATUSES.map((s) =>
        el("span", { className: `count status-${s}`, "data-status": s }, el("b", { text: found[s] }), ` ${s}`)));
      const total = Math.max(1, view.jobs.size);
      progress.replaceChildren(...["finished", "failed", "aborted", "running", "ready", "waiting"].map((s) => {
        const bar = el("span", { className: `status-${s}`, title: `${found[s]} ${s}` });
        bar.style.width = `${(100 * found[s]) / total}%`; // CSSOM, allowed by the CSP
        return bar;
      }));
      document.getElementById("rerun-graph").disabled = !(found.failed || found.aborted);
      document.getElementById("cancel-graph").disabled = ENDED.has(graph.status);
    }

    // The drawing: one node per job, or above the server's size one node per job type.
    function drawDag() {
      view.nodes = new Map();
      if (typeof dagre === "undefined") {
        dag.replaceChildren(el("p", { className: "muted", text: "The layout library did not load." }));
        return;
      }
      const layout = new dagre.graphlib.Graph();
      layout.setGraph({ rankdir: "LR", nodesep: 14, ranksep: 46, marginx: 8, marginy: 8 });
      layout.setDefaultEdgeLabel(() => ({}));
      if (view.collapsed) {
        const types = [...new Set([...view.jobs.values()].map((job) => job.type))].sort();
        for (const type of types) layout.setNode(type, { width: Math.max(150, 8 * type.length + 30), height: 58 });
        for (const [from, to] of view.typeEdges) if (layout.hasNode(from) && layout.hasNode(to)) layout.setEdge(from, to);
      } else {
        for (const job of view.jobs.values()) {
          layout.setNode(job.name, { width: Math.min(260, 7.2 * Math.min(job.name.length, 32) + 26), height: 30 });
        }
        for (const job of view.jobs.values()) {
          for (const dep of job.deps || []) if (view.jobs.has(dep)) layout.setEdge(dep, job.name);
          if (job.parent && view.jobs.has(job.parent)) layout.setEdge(job.parent, job.name);
        }
      }
      dagre.layout(layout);
      const { width, height } = layout.graph();
      const root = svg("svg", { width: Math.ceil(width), height: Math.ceil(height), viewBox: `0 0 ${Math.ceil(width)} ${Math.ceil(height)}`, role: "img" });
      const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }));
      root.append(svg("defs", {}, marker));
      for (const edge of layout.edges()) {
        const points = layout.edge(edge).points;
        const d = points.map((p, i) => `${i ? "L" : "M"} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(" ");
        root.append(svg("path", { d, class: "edge", "marker-end": "url(#arrow)" }));
      }
      for (const id of layout.nodes()) {
        const box = layout.node(id);
        const group = svg("g", { class: "node", transform: `translate(${(box.x - box.width / 2).toFixed(1)},${(box.y - box.height / 2).toFixed(1)})` });
        group.append(svg("rect", { class: "box", width: box.width, height: box.height }));
        group.append(svg("title", { text: id }));
        if (view.collapsed) {
          group.setAttribute("data-type", id);
          group.append(svg("text", { x: 10, y: 17, text: id.length > 30 ? `${id.slice(0, 29)}…` : id }));
          group.append(svg("text", { x: 10, y: 33, class: "sub" }));
          group.append(svg("g", { class: "segments", transform: `translate(10,${box.height - 16})` }));
          group.addEventListener("click", () => { view.filter = ""; view.typeFilter = id; view.tablePage = 0; drawTable(); tableBox.scrollIntoView(); });
        } else {
          group.setAttribute("data-job", id);
          group.append(svg("text", { x: 10, y: 19, text: id.length > 32 ? `${id.slice(0, 31)}…` : id }));
          group.addEventListener("click", () => { location.hash = jobHref(graphId, id); });
        }
        view.nodes.set(id, { group, width: box.width });
        root.append(group);
      }
      dag.replaceChildren(root);
      paintDag();
    }

    // Colours (and a collapsed node's counts) from the jobs as they are now, no new layout.
    function paintDag() {
      if (!view.collapsed) {
        for (const [name, node] of view.nodes) {
          const job = view.jobs.get(name);
          node.group.setAttribute("class", `node status-${job ? job.status : "waiting"}`);
          node.group.setAttribute("data-status", job ? job.status : "");
          node.group.querySelector("title").textContent = job
            ? `${name}: ${job.status}${job.error ? ` (${job.error})` : ""}` : name;
        }
        return;
      }
      const byType = new Map();
      for (const job of view.jobs.values()) {
        const found = byType.get(job.type) || Object.fromEntries(JOB_STATUSES.map((s) => [s, 0]));
        found[job.status] = (found[job.status] || 0) + 1;
        byType.set(job.type, found);
      }
      for (const [type, node] of view.nodes) {
        const found = byType.get(type) || {};
        const total = JOB_STATUSES.reduce((sum, s) => sum + (found[s] || 0), 0);
        // The node's colour: failed if any failed, else running if any runs, else finished when all did.
        const shown = found.failed ? "failed" : found.running ? "running" : found.finished === total ? "finished"
          : found.aborted && found.aborted + (found.finished || 0) === total ? "aborted" : found.ready ? "ready" : "waiting";
        node.group.setAttribute("class", `node status-${shown}`);
        node.group.setAttribute("data-status", shown);
        const summary = JOB_STATUSES.filter((s) => found[s]).map((s) => `${found[s]} ${s}`).join(", ");
        node.group.querySelector("text.sub").textContent = `${total} jobs`;
        node.group.querySelector("title").textContent = `${type}: ${summary}`;
        const segments = node.group.querySelector("g.segments");
        const width = node.width - 20;
        let x = 0;
        segments.replaceChildren();
        for (const s of ["finished", "failed", "aborted", "running", "ready", "waiting"]) {
          if (!found[s]) continue;
          const w = (width * found[s]) / Math.max(1, total);
          segments.append(svg("rect", { class: `seg status-${s}`, x: x.toFixed(1), y: 0, width: w.toFixed(1), height: 6 },
            svg("title", { text: `${found[s]} ${s}` })));
          x += w;
        }
      }
    }

    const COLUMNS = [
      { key: "name", label: "job", sortable: true },
      { key: "type", label: "type", sortable: true },
      { key: "status", label: "status", sortable: true },
      { key: "attempts", label: "attempts", sortable: true },
      { key: "duration", label: "duration", sortable: true },
      { key: "error", label: "error" },
    ];

    function sortValue(job, key) {
      if (key === "status") return STATUS_RANK[job.status] ?? 9;
      if (key === "duration") return seconds(job) ?? -1;
      if (key === "attempts") return job.attempts || 0;
      return job[key] || "";
    }

    function drawTable() {
      const { key, descending } = view.sort;
      let jobs = [...view.jobs.values()];
      if (view.filter) jobs = jobs.filter((job) => job.status === view.filter);
      if (view.typeFilter) jobs = jobs.filter((job) => job.type === view.typeFilter);
      jobs.sort((a, b) => {
        const x = sortValue(a, key);
        const y = sortValue(b, key);
        const order = x < y ? -1 : x > y ? 1 : a.name < b.name ? -1 : a.name > b.name ? 1 : 0;
        return descending ? -order : order;
      });
      const pages = Math.max(1, Math.ceil(jobs.length / TABLE_PAGE));
      view.tablePage = Math.min(view.tablePage, pages - 1);
      const shown = jobs.slice(view.tablePage * TABLE_PAGE, (view.tablePage + 1) * TABLE_PAGE);

      const header = el("tr", {}, COLUMNS.map((column) => {
        const sorted = column.key === key ? (descending ? " sorted-desc" : " sorted-asc") : "";
        return el("th", {
          className: `${column.sortable ? "sortable" : ""}${sorted}`,
          "data-sort": column.sortable ? column.key : null,
          text: column.label,
          onclick: column.sortable ? () => {
            view.sort = { key: column.key, descending: column.key === key ? !descending : column.key !== "name" && column.key !== "type" && column.key !== "status" };
            view.tablePage = 0;
            drawTable();
          } : null,
        });
      }));
      const body = shown.map((job) => el("tr", { className: `row-${job.status}`, "data-job": job.name, "data-status": job.status },
        el("td", { className: "name-cell" }, link(jobHref(graphId, job.name), job.name)),
        el("td", { text: job.type }),
        el("td", {}, badge(job.status)),
        el("td", { className: "num", text: job.attempts || 0 }),
        el("td", { className: "num", text: duration(seconds(job)) }),
        el("td", { className: "error-cell", text: job.error || "" })));

      const statusFilter = el("select", {
        id: "job-status-filter",
        onchange: (event) => { view.filter = event.target.value; view.tablePage = 0; drawTable(); },
      }, el("option", { value: "", text: "every status" }),
      JOB_STATUSES.map((s) => el("option", { value: s, text: s, selected: s === view.filter ? "selected" : null })));
      const typeNote = view.typeFilter ? el("button", {
        text: `type ${view.typeFilter} ✕`, onclick: () => { view.typeFilter = ""; drawTable(); },
      }) : null;
      const pager = el("div", { className: "pager" },
        el("button", { id: "jobs-previous", text: "← previous", disabled: view.tablePage === 0 ? "disabled" : null,
          onclick: () => { view.tablePage -= 1; drawTable(); } }),
        el("span", { className: "muted", id: "jobs-page", text: `page ${view.tablePage + 1} of ${pages} · ${jobs.length} jobs` }),
        el("button", { id: "jobs-next", text: "next →", disabled: view.tablePage >= pages - 1 ? "disabled" : null,
          onclick: () => { view.tablePage += 1; drawTable(); } }));
      tableBox.replaceChildren(
        el("div", { className: "toolbar" }, el("label", { text: "Status " }, statusFilter), typeNote),
        el("table", { id: "jobs-table" }, el("thead", {}, header), el("tbody", {}, body)),
        pager);
    }

    await refresh();
  }

  // -- one job ----------------------------------------------------------------------------
  async function showJob(graphId, name, mine) {
    setCrumbs(link("#/", "graphs"), link(graphHref(graphId), graphId), el("span", { text: name }));
    const title = el("h1", {}, el("span", { text: name }));
    const actions = el("div", { className: "toolbar" });
    const facts = el("div", { className: "card" });
    const argsBox = el("div");
    const attemptsBox = el("div", { id: "attempts" });
    const artifactsBox = el("div", { id: "artifacts" });
    const logsBox = el("div", { id: "logs" });
    page.replaceChildren(title, actions, el("div", { className: "grid2" },
      el("div", {}, el("h2", { text: "Job" }), facts),
      el("div", {}, el("h2", { text: "Args" }), argsBox)),
    el("h2", { text: "Attempts" }), attemptsBox,
    el("h2", { text: "Artifacts" }), artifactsBox,
    el("h2", { text: "Logs" }), logsBox);

    const base = `/api/graphs/${enc(graphId)}/jobs/${enc(name)}`;
    actions.append(
      el("button", {
        id: "rerun-job", className: "primary", text: "Rerun",
        onclick: () => act(`rerun job ${name}?`, () => post(`/api/graphs/${enc(graphId)}/rerun`, { job: name }),
          (r) => `${r.jobs_rerun} job(s) to run again`, refresh),
      }),
      el("button", {
        id: "rerun-downstream", text: "Rerun with downstream",
        onclick: () => act(`rerun job ${name} and every job that depends on it?`,
          () => post(`/api/graphs/${enc(graphId)}/rerun`, { job: name, downstream: true }),
          (r) => `${r.jobs_rerun} job(s) to run again`, refresh),
      }),
      el("button", {
        id: "cancel-graph", className: "danger", text: "Cancel graph",
        onclick: () => act(`cancel graph ${graphId}? Its jobs that have not ended are aborted.`,
          () => post(`/api/graphs/${enc(graphId)}/cancel`, {}), (r) => `${r.jobs_aborted} jobs aborted`, refresh),
      }));

    async function refresh() {
      const read = await readOrRetry(mine, refresh, () =>
        Promise.all([api(base), api(`${base}/logs`).catch((error) => ({ error: error.message }))]));
      if (read === undefined) return;
      const [job, logs] = read;
      drawJob(job);
      drawLogs(logs);
      if (!ENDED.has(job.status)) {
        setLive(true, "live");
        schedule(mine, refresh);
      } else {
        setLive(false, "");
      }
    }

    function fact(label, value) {
      if (value === null || value === undefined || value === "" || (Array.isArray(value) && !value.length)) return [];
      return [el("dt", { text: label }), el("dd", {}, value instanceof Node ? value : String(value))];
    }

    function jobLinks(names) {
      const box = el("span");
      (names || []).forEach((dep, i) => { if (i) box.append(", "); box.append(link(jobHref(graphId, dep), dep)); });
      return box;
    }

    function drawJob(job) {
      title.replaceChildren(el("span", { text: job.name }), badge(job.status));
      title.setAttribute("data-status", job.status);
      document.getElementById("rerun-job").disabled = job.status === "running";
      document.getElementById("rerun-downstream").disabled = job.status === "running";
      facts.replaceChildren(el("dl", { className: "facts" },
        fact("graph", link(graphHref(graphId), graphId)),
        fact("type", job.type),
        fact("status", job.status),
        fact("attempts", job.max_attempts ? `${job.attempts} of at most ${job.max_attempts}` : job.attempts),
        fact("started", when(job.started_at)),
        fact("finished", when(job.finished_at)),
        fact("duration", duration(seconds(job))),
        fact("pool", job.pool),
        fact("worker", job.worker ? `${job.worker.id} (${job.worker.pool})` : ""),
        fact("code version", job.code_version ? el("span", { className: "mono", id: "code-version", text: job.code_version }) : ""),
        fact("deps", job.deps && job.deps.length ? jobLinks(job.deps) : ""),
        fact("dependents", job.dependents && job.dependents.length ? jobLinks(job.dependents) : ""),
        fact("parent", job.parent ? link(jobHref(graphId, job.parent), job.parent) : ""),
        fact("reason", job.status !== "failed" && job.error ? job.error : "")));

      argsBox.replaceChildren(job.args === undefined
        ? el("p", { className: "muted", text: "This target does not list a job's args." })
        : el("pre", { className: "light", id: "job-args", text: JSON.stringify(job.args, null, 2) }));

      const history = job.errors || [];
      const detail = job.error_detail || null;
      const items = history.map((entry, i) => {
        const last = i === history.length - 1;
        return el("div", { className: "attempt", "data-attempt": entry.attempt },
          el("div", {}, el("b", { text: `attempt ${entry.attempt}` }), " ", el("span", { className: "muted", text: when(entry.at) })),
          el("div", { className: "message", text: `${entry.type}: ${entry.message}` }),
          last && detail && detail.traceback ? el("pre", { className: "traceback", text: detail.traceback }) : null);
      });
      if (!items.length && job.error) {
        items.push(el("div", { className: "attempt" }, el("div", { className: "message", text: job.error }),
          detail && detail.traceback ? el("pre", { className: "traceback", text: detail.traceback }) : null));
      }
      attemptsBox.replaceChildren(...(items.length ? items : [el("p", { className: "muted",
        text: job.attempts ? `${job.attempts} attempt(s), no error.` : "Not run yet." })]));

      const artifacts = job.artifacts || [];
      artifactsBox.replaceChildren(artifacts.length ? el("table", { id: "artifacts-table" },
        el("thead", {}, el("tr", {}, ["key", "size", "SHA-256", ""].map((h) => el("th", { text: h })))),
        el("tbody", {}, artifacts.map((item) => el("tr", {},
          el("td", { className: "mono", text: `${item.bucket}/${item.key}` }),
          el("td", { className: "num", text: size(item.size) }),
          el("td", { className: "mono", text: item.sha256 || "" }),
          el("td", {}, item.href ? el("a", { href: item.href, download: item.key.split("/").pop(), text: "download" }) : ""))))
      ) : el("p", { className: "muted", text: "No artifacts." }));
    }

    function drawLogs(logs) {
      if (logs.error) { logsBox.replaceChildren(el("p", { className: "muted", text: logs.error })); return; }
      const sources = logs.sources || [];
      if (!sources.length) { logsBox.replaceChildren(el("p", { className: "muted", text: "No log lines yet." })); return; }
      logsBox.replaceChildren(...sources.flatMap((source) => [
        el("div", { className: "muted mono log-source" },
          el("span", { text: source.total > source.lines.length
            ? `${source.source} (the last ${source.lines.length} of ${source.total} lines)` : source.source }),
          " ",
          el("a", { className: "whole-log", href: `${base}/logs.txt?attempt=${source.attempt}`,
            download: "", text: "whole log" })),
        el("pre", { className: "log", text: source.lines.join("\n") }),
      ]));
    }

    await refresh();
  }

  // -- actions ----------------------------------------------------------------------------
  async function act(question, call, done, then) {
    if (!window.confirm(question)) return;
    try {
      const answer = await call();
      say(done(answer));
    } catch (error) {
      say(error.message, true);
      return;
    }
    then();
  }

  window.addEventListener("hashchange", route);
  route();
})();
