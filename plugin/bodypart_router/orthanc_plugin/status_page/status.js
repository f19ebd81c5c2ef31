// Status page of the body-part router: polls the status JSON and renders it.
// Plain JS, no dependencies. Every URL is relative to /bodypart-router/status.html, so the
// page also works behind a reverse proxy that mounts Orthanc under a prefix. Values from the
// server are inserted as text nodes, never as HTML.
(function () {
  "use strict";

  var REFRESH_MS = 2000;
  var EXPLORER_INSTANCE = "../app/explorer.html#instance?uuid=";

  function $(id) { return document.getElementById(id); }

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") node.textContent = attrs[k];
      else if (k === "onclick") node.addEventListener("click", attrs[k]);
      else node.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return node;
  }

  function fill(tbody, rows, emptyText, columns) {
    tbody.textContent = "";
    if (!rows.length) {
      tbody.appendChild(el("tr", {}, [el("td", { colspan: String(columns), "class": "empty", text: emptyText })]));
      return;
    }
    rows.forEach(function (r) { tbody.appendChild(r); });
  }

  function num(v) { return el("td", { "class": "num", text: v === null || v === undefined ? "-" : String(v) }); }
  function txt(v) { return el("td", { text: v === null || v === undefined || v === "" ? "-" : String(v) }); }
  function pct(v) { return v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %"; }
  // Every time on the page is UTC, as the server gives it ("2026-12-07T05:41:10Z").
  function time(iso) { return iso ? iso.replace("T", " ").replace("Z", "") : "-"; }
  function utcNow() { return new Date().toISOString().slice(11, 19); }
  function since(iso) { return iso ? duration((Date.now() - Date.parse(iso)) / 1000) : "-"; }
  function plural(n, one, many) { return n + " " + (n === 1 ? one : many); }

  function duration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s);
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function instanceLink(id) {
    return el("td", {}, [el("a", { href: EXPLORER_INSTANCE + encodeURIComponent(id), title: id, text: id.slice(0, 8) + "\u2026" })]);
  }

  function showError(message, items) {
    var box = $("error");
    box.textContent = message || "";
    if (items && items.length) box.appendChild(el("ul", {}, items.map(function (i) { return el("li", { text: i }); })));
    box.style.display = message ? "block" : "none";
  }

  // One red banner per destination that is down: since when, how many forwards wait for it.
  // A green one for a destination back within the last day: when, and how long it was down.
  function renderOutages(dests) {
    var box = $("outages"), down = 0, back = [];
    box.textContent = "";
    Object.keys(dests).forEach(function (d) {
      var x = dests[d];
      if (x.Circuit !== "closed") {
        down += 1;
        box.appendChild(el("div", { "class": "outage" }, [
          el("strong", { text: "Destination " + d + " is down" }),
          " since " + time(x.DownSince) + " UTC (" + since(x.DownSince) + "). " +
          plural(x.Pending || 0, "forward waits", "forwards wait") + " for it" +
          (x.DeadLetters ? "; " + plural(x.DeadLetters, "dead letter", "dead letters") + " to resubmit" : "") + ".",
          el("span", { "class": "why", text: x.LastError ? "Last error: " + x.LastError : "" })]));
      } else if (x.LastOutage && Date.now() - Date.parse(x.LastOutage.To) < 86400000) {
        var o = x.LastOutage;
        back.push(d + " is reachable again since " + time(o.To) + " UTC" +
          (o.From ? " (down from " + time(o.From) + ", " + duration((Date.parse(o.To) - Date.parse(o.From)) / 1000) + ")" : "") +
          (x.Pending ? "; " + plural(x.Pending, "forward", "forwards") + " still to send" : "; forwards resumed") +
          (x.DeadLetters ? "; " + plural(x.DeadLetters, "dead letter waits", "dead letters wait") + " for Resubmit all" : ""));
      }
    });
    box.style.display = down ? "block" : "none";
    var rec = $("recovered");
    rec.textContent = back.join(" \u00b7 ");
    rec.style.display = back.length ? "block" : "none";
  }

  function request(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      headers: body === undefined ? {} : { "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body)
    }).then(function (r) {
      return r.text().then(function (t) {
        var data = null;
        try { data = t ? JSON.parse(t) : null; } catch (e) { data = { Message: t }; }
        if (!r.ok) throw new Error((data && (data.Message || data.Details)) || (r.status + " " + r.statusText));
        return data;
      });
    });
  }

  // GET status answers the router's status; this page's figures are in its "Metrics" and
  // "Backfill" sections (shapes documented in bodypart_router/ops/metrics.py and backfill.py).
  function render(top) {
    var s = top.Metrics;
    if (!s) { showError("The router status has no Metrics section: is the monitoring extension loaded?"); return; }
    var disabled = top.Enabled === false;
    var errors = top.Errors && top.Errors.length ? top.Errors : (top.Error ? [top.Error] : []);
    showError(disabled ? (errors.length ? "The router is disabled; instances are stored but neither classified nor forwarded. Fix:"
                                        : "The router is disabled: BodyPartRouter.Enabled is false") : "", disabled ? errors : []);
    // Health: "ok", "degraded:<why>", "stopped" or "disabled:<why>" (the status's one-word truth).
    var health = top.Health || "unknown";
    $("health").textContent = health.split(":")[0].toUpperCase();
    $("health").title = health;
    $("health").className = "badge" + (health === "ok" ? "" : health.indexOf("degraded") === 0 ? " shadow" : " failed");
    if (health !== "ok" && !disabled) { showError("Health: " + health, []); }
    var shadow = s.Mode === "shadow";
    $("mode").textContent = disabled ? "DISABLED" : shadow ? "SHADOW MODE - nothing is forwarded" : "LIVE";
    $("mode").className = "badge" + (disabled ? " disabled" : shadow ? " shadow" : "");
    $("model").textContent = s.Model ? s.Model.Version : "not loaded";
    $("provider").textContent = s.Model ? "(" + s.Model.ExecutionProvider + ")" : "";
    $("queue").textContent = s.QueueDepth === null || s.QueueDepth === undefined ? "-" : String(s.QueueDepth);
    $("pending").textContent = s.ForwardsPending === undefined || s.ForwardsPending === null ? "-" : String(s.ForwardsPending);
    $("uptime").textContent = duration(s.UptimeSeconds);
    $("refreshed").textContent = utcNow();

    var classes = s.Counts.Classified;
    fill($("classes"), Object.keys(classes).map(function (c) {
      return el("tr", {}, [txt(c), num(classes[c])]);
    }), "nothing yet", 2);

    var reasons = [];
    ["Skipped", "Failed"].forEach(function (kind) {
      var m = s.Counts[kind];
      Object.keys(m).forEach(function (r) { reasons.push(el("tr", {}, [txt(kind.toLowerCase() + ": " + r), num(m[r])])); });
    });
    fill($("reasons"), reasons, "none", 2);

    var t = s.Timings;
    function timing(name, x) { return x.Count ? name + " " + (1000 * x.MeanSeconds).toFixed(1) + " ms/instance" : name + " -"; }
    $("timings").textContent = timing("decode", t.Decode) + " \u00b7 " + timing("inference", t.Inference);

    var dests = s.Destinations;
    renderOutages(dests);
    fill($("destinations"), Object.keys(dests).map(function (d) {
      var x = dests[d];
      return el("tr", { "class": x.Circuit === "closed" ? "" : "down" }, [txt(d), num(x.Forwards), num(x.Pending), num(x.Failures),
        num(x.DeadLetters), el("td", {}, [el("span", { "class": "badge " + x.Circuit, text: x.Circuit === "open" ? "down" : x.Circuit })]),
        txt(x.DownSince ? time(x.DownSince) : "")]);
    }), "no destination configured", 7);

    // would-be forwards: destination x class; the store's WouldSend outlives restarts
    var sh = {};
    Object.keys(top.WouldSend || s.Shadow || {}).forEach(function (key) {
      sh[key.replace(/^(peer|modality|dicomweb):/, "")] = (top.WouldSend || s.Shadow)[key];
    });
    var shClasses = {};
    Object.keys(sh).forEach(function (d) { Object.keys(sh[d]).forEach(function (c) { shClasses[c] = true; }); });
    var cols = Object.keys(shClasses).sort();
    var head = $("shadow-head");
    head.textContent = "";
    head.appendChild(el("tr", {}, [el("th", { text: "Destination" })].concat(cols.map(function (c) { return el("th", { "class": "num", text: c }); }))));
    fill($("shadow"), Object.keys(sh).map(function (d) {
      return el("tr", {}, [txt(d)].concat(cols.map(function (c) { return num(sh[d][c] || 0); })));
    }), shadow ? "nothing would have been sent yet" : "only counted in shadow mode", cols.length + 1);

    var audit = s.HeaderAudit || {};
    fill($("audit"), Object.keys(audit).map(function (aet) {
      var a = audit[aet];
      return el("tr", {}, [txt(aet), num(a.agree), num(a.disagree), num(a["no-header"]),
        el("td", { "class": "num" + (a.mismatch_rate > 0.15 ? " disagree" : ""), text: pct(a.mismatch_rate) })]);
    }), "no instance audited yet", 5);

    var quality = s.ImageQuality || {};
    fill($("quality"), Object.keys(quality).map(function (aet) {
      var q = quality[aet];
      var cell = function (n) { return el("td", { "class": "num" + (n > 0 ? " disagree" : ""), text: n + (q.Films ? " (" + pct(n / q.Films) + ")" : "") }); };
      return el("tr", {}, [txt(aet), num(q.Films), cell(q.Turned), cell(q.Inverted), num(q.Lateral)]);
    }), "no film checked yet (a model with rotation and polarity outputs fills this table)", 5);
    var regions = s.Regions || {};
    $("regions").textContent = Object.keys(regions).length ? "Regions: " + Object.keys(regions).map(function (r) {
      return r + " " + regions[r];
    }).join(", ") : "";

    renderBackfill(top.Backfill);

    fill($("failures"), (s.Failures || []).map(function (f) {
      var button = el("button", { type: "button", text: "Resubmit", onclick: function () { resubmit(f.Instance, button); } });
      return el("tr", {}, [txt(time(f.Time)), instanceLink(f.Instance), txt(f.State), txt(f.Detail), el("td", {}, [button])]);
    }), "none", 5);

    // The first page comes with the status; older pages are read on demand.
    if (pages.dead.offset === 0) renderDead(s.DeadLetters); else loadPage("dead");
    if (pages.recent.offset === 0) renderRecent(s.Recent); else loadPage("recent");
    renderReroute(top.Reroute);
  }

  var PAGE = 50;
  var pages = { dead: { offset: 0, total: 0 }, recent: { offset: 0, total: 0 } };

  function pager(name, page) {
    var p = pages[name];
    p.total = page && page.Total ? page.Total : 0;
    var n = page && page.Items ? page.Items.length : 0;
    $(name + "-range").textContent = p.total ? (p.offset + 1) + "-" + (p.offset + n) + " of " + p.total : "";
    $(name + "-prev").disabled = p.offset === 0;
    $(name + "-next").disabled = p.offset + n >= p.total;
  }

  function renderDead(page) {
    var items = page && page.Items ? page.Items : [];
    $("dead-total").textContent = page && page.Total ? "(" + page.Total + ")" : "";
    $("resubmit-all").disabled = !(page && page.Total);
    fill($("dead"), items.map(function (f) {
      var button = el("button", { type: "button", text: "Resubmit", onclick: function () { resubmit(f.Instance, button); } });
      return el("tr", {}, [txt(time(f.Time)), instanceLink(f.Instance), txt(f.Destination), num(f.Attempts), txt(f.Detail),
        el("td", {}, [button])]);
    }), "no dead letters", 6);
    pager("dead", page);
  }

  function renderRecent(page) {
    fill($("recent"), (page && page.Items ? page.Items : []).map(function (r) {
      var headerCell = txt(r.HeaderAudit);
      if (r.HeaderAudit && r.HeaderAudit.indexOf("disagree") === 0) headerCell.className = "disagree";
      var notYet = (r.Waiting || []).map(function (d) { return d + " (waiting)"; })
        .concat((r.DeadLetters || []).map(function (d) { return d + " (dead letter)"; }))
        .concat((r.WouldSend || []).map(function (d) { return d + " (shadow)"; }));
      var notYetCell = txt(notYet.join(", "));
      if (notYet.length) notYetCell.className = "waiting";
      var facts = [r.Region, r.View, r.Rotation ? "turned " + r.Rotation + "\u00b0" : null, r.Inverted ? "inverted" : null]
        .filter(function (x) { return x; }).join(", ");
      return el("tr", {}, [txt(time(r.Time)), instanceLink(r.Instance), txt(r.Class), txt(facts),
        num(r.Score === null ? null : r.Score.toFixed(3)), txt(r.State), txt((r.Destinations || []).join(", ")),
        notYetCell, headerCell, txt(r.Source),
        el("td", {}, [el("button", { type: "button", text: "Explain", onclick: function () { explain(r.Instance); } })])]);
    }), "no instance processed yet", 11);
    pager("recent", page);
  }

  function loadPage(name) {
    var url = (name === "dead" ? "dead-letters" : "recent") + "?offset=" + pages[name].offset + "&limit=" + PAGE;
    request("GET", url).then(function (page) { (name === "dead" ? renderDead : renderRecent)(page); })
      .catch(function (e) { showError("Cannot read " + url + ": " + e.message); });
  }

  ["dead", "recent"].forEach(function (name) {
    $(name + "-prev").addEventListener("click", function () { pages[name].offset = Math.max(0, pages[name].offset - PAGE); refresh(); });
    $(name + "-next").addEventListener("click", function () { pages[name].offset += PAGE; refresh(); });
  });

  $("resubmit-all").addEventListener("click", function () {
    var button = $("resubmit-all");
    button.disabled = true;
    request("POST", "failed/resubmit", {})
      .then(function (r) { button.textContent = "Resubmitted " + r.Resubmitted.length; refresh(); })
      .catch(function (e) { button.disabled = false; showError("Resubmit all failed: " + e.message); });
  });

  function renderBackfill(b) {
    var active = b && (b.State === "planning" || b.State === "running");
    $("bf-start").disabled = !!active;
    $("bf-cancel").disabled = !active;
    $("bf-state").style.display = b ? "inline-block" : "none";
    if (!b) return;
    $("bf-state").textContent = b.State;
    $("bf-state").className = "badge " + b.State;
    $("bf-desc").textContent = b.Description + (b.Scope && b.Scope.Route ? ", classified and routed" : ", classified only") +
      " \u00b7 started " + time(b.StartedAt) + (b.FinishedAt ? " \u00b7 finished " + time(b.FinishedAt) : "") +
      (b.Error ? " \u00b7 error: " + b.Error : "");
    $("bf-bar").style.width = (b.Total ? Math.min(100, 100 * b.Done / b.Total) : 0).toFixed(1) + "%";
    var outcomes = Object.keys(b.Outcomes || {}).map(function (k) { return k + " " + b.Outcomes[k]; }).join(", ");
    $("bf-figures").textContent = b.Done + " / " + b.Total + (b.Planned ? "" : " (still listing)") +
      " \u00b7 " + (b.Rate === null ? "-" : b.Rate.toFixed(1)) + " instances/s \u00b7 ETA " + duration(b.EtaSeconds) +
      (outcomes ? " \u00b7 " + outcomes : "") + (b.YieldedSeconds ? " \u00b7 yielded to live ingest " + duration(b.YieldedSeconds) : "");
  }

  // POST explain answers the evidence, every rule and why, and the destinations; it sends nothing.
  function explain(instance) {
    request("POST", "explain", { Instance: instance }).then(function (data) {
      $("explain-id").textContent = instance;
      $("explain").textContent = JSON.stringify(data, null, 2);
      $("explain-box").style.display = "block";
      $("explain-box").scrollIntoView();
    }).catch(function (e) { showError("Explain failed: " + e.message); });
  }

  $("explain-close").addEventListener("click", function () { $("explain-box").style.display = "none"; });

  function renderReroute(r) {
    $("rr-start").disabled = !!(r && r.State === "running");
    $("rr-state").style.display = r ? "inline-block" : "none";
    if (!r) return;
    $("rr-state").textContent = r.State;
    $("rr-state").className = "badge " + r.State;
    $("rr-desc").textContent = (r.Description || "") + " \u00b7 started " + time(r.StartedAt) +
      (r.FinishedAt ? " \u00b7 finished " + time(r.FinishedAt) : "");
    $("rr-bar").style.width = (r.Total ? Math.min(100, 100 * r.Done / r.Total) : 0).toFixed(1) + "%";
    var dests = Object.keys(r.Destinations || {}).map(function (k) { return k + " " + r.Destinations[k]; }).join(", ");
    $("rr-figures").textContent = r.Done + " / " + r.Total + " \u00b7 " + r.Forwards + " new forward(s)" +
      (dests ? " (" + dests + ")" : "") + " \u00b7 " + r.AlreadySent + " already there \u00b7 " +
      r.NotClassified + " not classified" + (r.Errors ? " \u00b7 " + r.Errors + " error(s)" : "");
  }

  $("rr-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var ids = $("rr-ids").value.split(/\s+/).filter(function (x) { return x; });
    var dests = $("rr-dests").value.split(/[\s,]+/).filter(function (x) { return x; });
    var body = {};
    if ($("rr-since").value) body.Since = $("rr-since").value;
    if (ids.length) {
      // an ID may name an instance or a study: ask Orthanc which (relative to this page)
      Promise.all(ids.map(function (id) {
        return fetch("../studies/" + encodeURIComponent(id), { credentials: "same-origin" }).then(function (r) { return r.ok; });
      })).then(function (isStudy) {
        body.Studies = ids.filter(function (_, i) { return isStudy[i]; });
        body.Instances = ids.filter(function (_, i) { return !isStudy[i]; });
        startReroute(body, dests);
      });
    } else {
      startReroute(body, dests);
    }
  });

  function startReroute(body, dests) {
    if (dests.length) body.Destinations = dests;
    request("POST", "reroute", body).then(function () { showError(""); refresh(); })
      .catch(function (e) { showError("Re-route not started: " + e.message); });
  }

  function resubmit(instance, button) {
    button.disabled = true;
    request("POST", "resubmit", { Instances: [instance] })
      .then(function () { button.textContent = "Queued"; refresh(); })
      .catch(function (e) { button.disabled = false; showError("Resubmit failed: " + e.message); });
  }

  $("bf-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var body = { Route: $("bf-route").checked };
    var since = $("bf-since").value;
    var studies = $("bf-studies").value.split(/\s+/).filter(function (x) { return x; });
    if (since) body.Since = since;
    var rate = parseFloat($("bf-rate").value);
    if (rate > 0) body.RatePerSecond = rate;
    if (studies.length) body.Studies = studies;
    request("POST", "backfill", body).then(function () { showError(""); refresh(); })
      .catch(function (e) { showError("Backfill not started: " + e.message); });
  });

  $("bf-cancel").addEventListener("click", function () {
    request("DELETE", "backfill").then(refresh).catch(function (e) { showError("Cancel failed: " + e.message); });
  });

  var timer = null;
  function refresh() {
    clearTimeout(timer);
    request("GET", "status")
      .then(render)
      .catch(function (e) { showError("Cannot read the router status: " + e.message); })
      .then(function () { timer = setTimeout(refresh, REFRESH_MS); });
  }

  refresh();
})();
