/* convbench dashboard: draws a page from what its data/<page>.js hands over (pageLoaded), and
   each case's points from data/<page>/<n>.js, loaded when the case scrolls into view. Data comes
   in <script> files, not fetch(): a browser refuses fetch() of files next to a file:// page. */
"use strict";

const convbench = (() => {
  let page = null;
  const cases = {}; // case number -> its points, once loaded
  const waiting = {}; // case number -> callbacks waiting for its points
  const rendered = []; // plot elements drawn so far (the range buttons move them all)
  let range = null; // [from, to] dates shown, or null for every night
  const VERDICT = { r: "regression", i: "improvement", u: "unchanged", n: "new", m: "missing" };
  const COLORS = ["#0072B2", "#009E73", "#CC79A7", "#56B4E9", "#E69F00", "#000000"]; // Okabe & Ito
  const BAD = "#D55E00", GOOD = "#009E73", LOAD = "#E69F00";
  const VALUE = { throughput: "samples/s", step_time_ms: "step ms", time_to_target_s: "s to target" };
  const CONFIG = { displaylogo: false, responsive: true, modeBarButtonsToRemove: ["lasso2d", "select2d"] };

  function pageLoaded(data) { page = data; }

  function caseLoaded(table) {
    cases[table.case] = table;
    (waiting[table.case] || []).forEach((callback) => callback(table));
    delete waiting[table.case];
  }

  function loadCase(number, callback) {
    if (cases[number]) return callback(cases[number]);
    if (waiting[number]) return waiting[number].push(callback);
    waiting[number] = [callback];
    const script = document.createElement("script");
    script.src = `data/${page.page}/${number}.js`;
    script.onerror = () => console.warn(`convbench: ${script.src} did not load`);
    document.head.appendChild(script);
  }

  const format = (value) => {
    if (value === null || value === undefined) return "–";
    if (Math.abs(value) >= 1e4) return Math.round(value).toLocaleString("en-US");
    return Number(value.toPrecision(4)).toString();
  };
  const el = (tag, attributes = {}, text = "") => {
    const node = document.createElement(tag);
    Object.entries(attributes).forEach(([key, value]) => node.setAttribute(key, value));
    if (text) node.textContent = text;
    return node;
  };

  function openReport(night) {
    const link = page.nights.report[night];
    if (link) window.location.href = link;
  }

  /* ---- a series page ------------------------------------------------------------------- */

  function seriesPage() {
    drawNights(document.getElementById("nights"));
    const list = document.getElementById("cases");
    const cards = page.cases.map((summary, number) => caseCard(summary, number));
    order(cards).forEach((card) => list.appendChild(card));
    filters(document.getElementById("filters"), cards);
    const observer = new IntersectionObserver(
      (entries) => entries.filter((e) => e.isIntersecting).forEach((e) => {
        observer.unobserve(e.target);
        const number = Number(e.target.dataset.case);
        loadCase(number, (table) => drawCase(e.target.querySelector(".plot"), page.cases[number], table));
      }),
      { rootMargin: "400px" },
    );
    cards.forEach((card) => observer.observe(card));
  }

  function drawNights(target) {
    const n = page.nights;
    const index = n.id.map((_, i) => i);
    const text = index.map((i) => [
      `<b>${n.id[i]}</b> ${n.date[i] || ""} · ${n.commit[i] || "no commit"}`,
      `${n.status[i]}: ${n.done[i]} of ${n.total[i] ?? "?"} cases${n.stopped[i] ? ` (stopped by ${n.stopped[i]})` : ""}`,
      n.baseline[i].length ? `against ${n.baseline[i].length} run(s) before it` : "no baseline",
      `${n.regressions[i]} slower, ${n.memory[i]} more memory, ${n.improvements[i]} better, ${n.failed[i]} failed`,
      n.all[i] ? `all cases: ${VERDICT[n.all[i]]}` : "",
      n.loaded[i] ? `${n.loaded[i]} case(s) measured under load` : "",
      n.report[i] ? "click for the report" : "no report.html beside the history",
    ].filter(Boolean).join("<br>"));
    const bar = (name, values, color) => ({
      type: "bar", name, x: n.date, y: values, marker: { color }, customdata: index, text, hoverinfo: "text", textposition: "none",
    });
    const unfinished = index.filter((i) => n.status[i] !== "complete");
    const traces = [
      bar("slower", n.regressions, BAD),
      bar("more memory", n.memory, "#CC79A7"),
      bar("better", n.improvements, GOOD),
      bar("failed", n.failed, "#555555"),
      {
        type: "scatter", mode: "markers", name: "not complete", x: unfinished.map((i) => n.date[i]),
        y: unfinished.map(() => 0), customdata: unfinished, text: unfinished.map((i) => text[i]), hoverinfo: "text",
        marker: { symbol: "x-open", size: 9, color: LOAD, line: { width: 2 } },
      },
    ];
    const layout = {
      barmode: "stack", height: 220, margin: { l: 50, r: 10, t: 10, b: 40 }, hovermode: "closest",
      xaxis: { type: "date" }, yaxis: { title: { text: "cases" }, rangemode: "tozero" }, legend: { orientation: "h", y: 1.15 },
    };
    Plotly.newPlot(target, traces, layout, CONFIG);
    target.on("plotly_click", (event) => openReport(event.points[0].customdata));
    rendered.push(target);
  }

  function caseCard(summary, number) {
    const card = el("div", { class: "case", "data-case": String(number) });
    const heading = el("h3", {}, summary.id);
    const latest = [];
    if (summary.in_latest && summary.latest_time === "r") latest.push(["bad", "slower in the latest run"]);
    if (summary.in_latest && summary.latest_memory === "r") latest.push(["bad", "more memory in the latest run"]);
    if (summary.in_latest && summary.latest_status !== "ok") latest.push(["failed", `${summary.latest_status} in the latest run`]);
    if (!summary.ever_ok) latest.push(["muted", "never ran to the end"]);
    if (!summary.in_latest) latest.push(["muted", "not in the latest run"]);
    if (summary.flags) latest.push(["muted", `flagged in ${summary.flags} run(s)`]);
    latest.forEach(([kind, text]) => heading.appendChild(el("span", { class: `badge ${kind}` }, text)));
    card.appendChild(heading);
    const values = page.metrics.filter((m) => summary.latest[m.key] !== null)
      .map((m) => `${m.label} ${format(summary.latest[m.key])} ${m.unit}`);
    if (summary.in_latest && values.length) card.appendChild(el("p", { class: "muted latest" }, `latest run: ${values.join(" · ")}`));
    card.appendChild(el("div", { class: "plot case-plot", style: `height:${110 * page.metrics.length + 90}px` }));
    return card;
  }

  function order(cards) {
    // What changed last night first, then what was ever flagged; cases that never ran (a batch
    // too large for this GPU every night) are no news and go last.
    const rank = (summary) => {
      if (summary.in_latest && (summary.latest_time === "r" || summary.latest_memory === "r")) return 0;
      if (!summary.ever_ok) return 3;
      return summary.flags ? 1 : 2;
    };
    return cards.map((card, i) => [rank(page.cases[i]), i, card]).sort((a, b) => a[0] - b[0] || a[1] - b[1]).map((x) => x[2]);
  }

  function pointText(table, k, metric, night) {
    const n = page.nights;
    const lines = [`<b>${n.id[night]}</b> ${n.date[night] || ""} · ${n.commit[night] || "no commit"}`];
    let value = `${metric.label}: ${format(table[metric.key][k])} ${metric.unit}`;
    if (metric.spread && table[`${metric.key}_low`][k] !== null) {
      value += ` (repeats ${format(table[`${metric.key}_low`][k])}–${format(table[`${metric.key}_high`][k])})`;
    }
    lines.push(value);
    if (table.iqr[k] !== null) lines.push(`step-time IQR ${format(table.iqr[k])} ms`);
    const verdict = metric.verdict && table[metric.verdict][k];
    if (verdict && verdict !== "u") {
      const base = n.baseline[night].map((i) => n.id[i]);
      lines.push(`${metric.verdict}: <b>${VERDICT[verdict]}</b> against ${base.length} run(s): ${base.join(", ")}`);
    }
    if (n.status[night] !== "complete") lines.push(`the run is ${n.status[night]}`);
    if (table.loaded[k] !== null) lines.push(`measured under load: other processes used ${Math.round(table.loaded[k] * 100)}% of the CPUs`);
    lines.push(n.report[night] ? "click for the report" : "no report.html beside the history");
    return lines.join("<br>");
  }

  function drawCase(target, summary, table) {
    const n = page.nights, metrics = page.metrics;
    const x = table.night.map((night) => n.date[night]);
    const gap = 0.05, strip = 0.07, panel = (1 - strip - gap * metrics.length) / metrics.length;
    const traces = [], layout = {
      height: 110 * metrics.length + 90, margin: { l: 70, r: 10, t: 10, b: 30 }, showlegend: false, hovermode: "closest",
      xaxis: { type: "date", anchor: `y${metrics.length + 1}` }, shapes: [],
    };
    const at = (condition) => table.night.map((_, k) => k).filter(condition);
    metrics.forEach((metric, m) => {
      const axis = m === 0 ? "y" : `y${m + 1}`, name = m === 0 ? "yaxis" : `yaxis${m + 1}`;
      const top = 1 - m * (panel + gap);
      layout[name] = { domain: [top - panel, top], title: { text: `${metric.label}<br>(${metric.unit})`, font: { size: 11 } } };
      if (metric.verdict === "memory") layout[name].rangemode = "tozero"; // memory from zero, as in trend
      layout[name].anchor = "x";
      const ok = at((k) => table[metric.key][k] !== null);
      const trace = {
        type: "scatter", mode: "lines+markers", x: ok.map((k) => x[k]), y: ok.map((k) => table[metric.key][k]), yaxis: axis,
        customdata: ok.map((k) => table.night[k]), text: ok.map((k) => pointText(table, k, metric, table.night[k])), hoverinfo: "text",
        line: { width: 1, color: COLORS[m] },
        marker: {
          size: 5, color: COLORS[m],
          symbol: ok.map((k) => (n.status[table.night[k]] === "complete" ? "circle" : "circle-open")),
          line: { width: ok.map((k) => (table.loaded[k] !== null ? 2 : 0)), color: LOAD },
        },
      };
      if (metric.spread) {
        trace.error_y = {
          type: "data", symmetric: false, thickness: 1, width: 0, color: COLORS[m],
          array: ok.map((k) => (table[`${metric.key}_high`][k] ?? table[metric.key][k]) - table[metric.key][k]),
          arrayminus: ok.map((k) => table[metric.key][k] - (table[`${metric.key}_low`][k] ?? table[metric.key][k])),
        };
      }
      traces.push(trace);
      if (!metric.verdict) return;
      [["r", "triangle-down", BAD, "regression"], ["i", "triangle-up", GOOD, "improvement"]].forEach(([code, symbol, color, name]) => {
        const hit = ok.filter((k) => table[metric.verdict][k] === code);
        traces.push({
          type: "scatter", mode: "markers", name, x: hit.map((k) => x[k]), y: hit.map((k) => table[metric.key][k]), yaxis: axis,
          customdata: hit.map((k) => table.night[k]), text: hit.map((k) => pointText(table, k, metric, table.night[k])),
          hoverinfo: "text", marker: { symbol, size: 11, color, line: { width: 1, color: "white" } },
        });
      });
    });
    const strip_axis = `y${metrics.length + 1}`;
    layout[`yaxis${metrics.length + 1}`] = {
      domain: [0, strip], anchor: "x", showticklabels: true, tickvals: ["failed"], fixedrange: true, showgrid: false,
    };
    const failed = at((k) => table.status[k] !== null);
    traces.push({
      type: "scatter", mode: "markers", name: "failed", x: failed.map((k) => x[k]), y: failed.map(() => "failed"), yaxis: strip_axis,
      customdata: failed.map((k) => table.night[k]), hoverinfo: "text",
      text: failed.map((k) => `<b>${n.id[table.night[k]]}</b> ${n.date[table.night[k]] || ""}<br>${table.status[k]}: ${table.error[k] || ""}`),
      marker: { symbol: "x", size: 9, color: failed.map((k) => (table.status[k] === "oom" ? BAD : "#000000")) },
    });
    const flagged = at((k) => table.time[k] === "r" || table.memory[k] === "r").slice(-30);
    flagged.forEach((k) => {
      const base = n.baseline[table.night[k]];
      if (!base.length) return;
      layout.shapes.push({
        type: "rect", xref: "x", yref: "paper", x0: n.date[base[0]], x1: x[k], y0: strip + gap / 2, y1: 1,
        fillcolor: "rgba(213, 94, 0, 0.10)", line: { width: 0 }, layer: "below",
      });
    });
    if (range) layout.xaxis.range = range;
    Plotly.newPlot(target, traces, layout, CONFIG);
    target.on("plotly_click", (event) => openReport(event.points[0].customdata));
    rendered.push(target);
  }

  function choices(values) {
    const distinct = [...new Set(values.filter((v) => v !== null && v !== undefined))];
    return distinct.sort((a, b) => (typeof a === "number" && typeof b === "number" ? a - b : String(a).localeCompare(String(b))));
  }

  function select(form, label, options, onChange) {
    const wrap = el("label", {}, `${label} `);
    const box = el("select", { name: label });
    options.forEach(([value, text]) => box.appendChild(el("option", { value: String(value) }, text)));
    box.addEventListener("change", onChange);
    wrap.appendChild(box);
    form.appendChild(wrap);
    return box;
  }

  function caseFilters(form, items, onChange) {
    const fields = [["model", "model"], ["optimizer", "optimizer"], ["precision", "precision"], ["batch", "batch"]];
    const boxes = fields.map(([key, label]) => [key, select(form, label, [["", "all"], ...choices(items.map((c) => c[key])).map((v) => [v, String(v)])], onChange)]);
    return (item) => boxes.every(([key, box]) => box.value === "" || String(item[key]) === box.value);
  }

  function filters(form, cards) {
    const count = el("span", { class: "muted count" });
    let show = null;
    const apply = () => {
      let shown = 0;
      cards.forEach((card, i) => {
        const summary = page.cases[i];
        const wanted = {
          all: true,
          latest: summary.in_latest && (summary.latest_time === "r" || summary.latest_memory === "r"),
          ever: summary.flags > 0,
          failed: summary.in_latest && summary.latest_status !== "ok",
        }[show.value];
        const visible = matches(summary) && wanted;
        card.style.display = visible ? "" : "none";
        shown += visible;
      });
      count.textContent = `${shown} of ${cards.length} cases`;
    };
    const matches = caseFilters(form, page.cases, apply);
    show = select(form, "show", [["all", "every case"], ["latest", "flagged in the latest run"], ["ever", "flagged in any run"], ["failed", "failed in the latest run"]], apply);
    const spans = [["all", null], ["30 days", 30], ["90 days", 90], ["1 year", 365]];
    spans.forEach(([label, days]) => {
      const button = el("button", { type: "button" }, label);
      button.addEventListener("click", () => setRange(days));
      form.appendChild(button);
    });
    form.appendChild(count);
    apply();
  }

  function setRange(days) {
    const dates = page.nights.date.filter(Boolean);
    const last = new Date(dates[dates.length - 1].replace(" ", "T") + "Z");
    range = days === null ? null : [new Date(last - days * 864e5).toISOString().slice(0, 19).replace("T", " "), dates[dates.length - 1]];
    rendered.forEach((plot) => Plotly.relayout(plot, range ? { "xaxis.range": range } : { "xaxis.autorange": true }));
  }

  /* ---- the GPU page ------------------------------------------------------------------- */

  function gpuPage() {
    const plot = document.getElementById("speedup"), table = document.getElementById("table");
    if (page.error) {
      plot.appendChild(el("p", { class: "badge failed" }, page.error));
      return;
    }
    const form = document.getElementById("filters");
    const draw = () => {
      const shown = page.cases.map((c, i) => [c, i]).filter(([c]) => matches(c));
      const ids = shown.map(([c]) => c.id);
      const traces = page.devices.map((device, d) => ({
        type: "bar", orientation: "h", name: device, y: ids, x: shown.map(([, i]) => page.speedup[reference.value][device][i]),
        marker: { color: COLORS[d % COLORS.length] }, hoverinfo: "text",
        text: shown.map(([c, i]) => `${c.id}<br>${device}: ${format(page.values[device][i])} ${VALUE[page.value]}<br>` +
          `speed-up ${format(page.speedup[reference.value][device][i])} over ${reference.value}` +
          (page.status[device][i] !== "ok" ? `<br>${page.status[device][i]}` : "")),
        textposition: "none",
      }));
      const layout = {
        barmode: "group", height: 120 + ids.length * (8 + 6 * page.devices.length), hovermode: "closest",
        margin: { l: 10, r: 10, t: 80, b: 20 }, legend: { orientation: "h", yref: "container", y: 1, yanchor: "top" },
        xaxis: { title: { text: `speed-up over ${reference.value}` }, side: "top" },
        yaxis: { automargin: true, autorange: "reversed", tickfont: { family: "monospace", size: 10 } },
      };
      Plotly.react(plot, traces, layout, CONFIG);
      drawTable(table, shown);
    };
    const matches = caseFilters(form, page.cases, () => draw());
    const reference = select(form, "reference", page.devices.map((d) => [d, d]), () => draw());
    draw();
  }

  function drawTable(target, shown) {
    const grid = el("table", { class: "index" });
    const head = el("tr");
    head.appendChild(el("th", {}, "case"));
    page.devices.forEach((device, d) => {
      const th = el("th", {});
      const link = page.pages[d] ? el("a", { href: page.pages[d] }, device) : el("span", {}, device);
      th.appendChild(link);
      th.appendChild(el("div", { class: "muted" }, `${page.runs[d]}: ${VALUE[page.value]} · speed-up · peak MiB`));
      head.appendChild(th);
    });
    grid.appendChild(head);
    const reference = document.querySelector("select[name=reference]").value;
    shown.forEach(([c, i]) => {
      const row = el("tr");
      row.appendChild(el("td", {}, c.id));
      page.devices.forEach((device) => {
        const status = page.status[device][i];
        const text = status === "ok"
          ? `${format(page.values[device][i])} · ${format(page.speedup[reference][device][i])}× · ${format(page.peak_mib[device][i])}`
          : status;
        row.appendChild(el("td", { class: status === "ok" ? "" : "status-failed" }, text));
      });
      grid.appendChild(row);
    });
    target.replaceChildren(grid);
  }

  return { pageLoaded, caseLoaded, seriesPage, gpuPage };
})();
