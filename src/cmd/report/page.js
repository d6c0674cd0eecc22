"use strict";
// wanbatch report: renders the job cards from #jobs-data a page at a time, filters them, and
// records keep / reject decisions in localStorage (keyed by the campaign) for download as CSV.
// All data is text: cards are built with textContent and attributes, never from markup.
(function () {
  var PAGE = 48;
  var data = JSON.parse(document.getElementById("jobs-data").textContent);
  var root = document.getElementById("jobs");
  var moreBox = document.getElementById("more");
  var moreButton = document.getElementById("more-button");
  var toolbar = document.getElementById("toolbar");
  var fState = document.getElementById("f-state");
  var fFlag = document.getElementById("f-flag");
  var fReview = document.getElementById("f-review");
  var KEY = "wanbatch-review:" + document.body.getAttribute("data-campaign");
  var saved = {};
  try {
    saved = JSON.parse(localStorage.getItem(KEY) || "{}") || {};
  } catch (e) {
    saved = {};
  }
  var list = [];
  var shown = 0;
  var nearVideos =
    "IntersectionObserver" in window
      ? new IntersectionObserver(
          function (entries) {
            entries.forEach(function (e) {
              if (!e.isIntersecting) return;
              e.target.src = e.target.getAttribute("data-src");
              nearVideos.unobserve(e.target);
            });
          },
          { rootMargin: "400px" }
        )
      : null;

  // A decision kept in the browser is about one take of a video: the request that made it. After
  // `retry --rejected` and a new run the job has a new take, and the old decision no longer applies.
  function take(j) {
    return j.request_id || "";
  }
  function savedOf(j) {
    var s = saved[j.id];
    return s && (s.t || "") === take(j) ? s : null;
  }
  function decision(j) {
    var s = savedOf(j);
    return s ? s.d || "" : j.review || "";
  }
  function noteOf(j) {
    var s = savedOf(j);
    return s ? s.n || "" : j.note || "";
  }
  function persist() {
    try {
      localStorage.setItem(KEY, JSON.stringify(saved));
    } catch (e) {
      document.getElementById("decided").textContent = "cannot keep decisions in this browser: " + e;
    }
  }

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }

  function picture(p, label) {
    var f = el("figure");
    if (p.src) {
      var img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = label + ": " + p.text;
      img.title = p.text;
      img.src = p.src;
      img.addEventListener("error", function () {
        img.hidden = true;
        f.insertBefore(el("div", "noimage", label + " not reachable: " + p.text), img);
      });
      f.appendChild(img);
      f.appendChild(el("figcaption", null, label));
    } else {
      f.appendChild(el("div", "noimage", label + ": " + p.text));
    }
    return f;
  }

  function video(j) {
    var v = el("video");
    v.preload = "metadata";
    v.muted = true;
    v.loop = true;
    v.playsInline = true;
    v.controls = true;
    // The fragment makes the browser show the first frame as a poster. The file is opened only
    // when the card comes near the window: a page of 48 does not start 48 media pipelines.
    var src = j.video + "#t=0.001";
    if (nearVideos) {
      v.setAttribute("data-src", src);
      nearVideos.observe(v);
    } else {
      v.src = src;
    }
    v.addEventListener("mouseenter", function () {
      var p = v.play();
      if (p && p.catch) p.catch(function () {});
    });
    v.addEventListener("mouseleave", function () {
      v.pause();
    });
    return v;
  }

  function reviewBar(j, card) {
    var bar = el("div", "review");
    var keep = el("button", "keep", "keep");
    var reject = el("button", "reject", "reject");
    var note = el("input");
    keep.type = reject.type = "button";
    note.type = "text";
    note.placeholder = "note (optional)";
    note.value = noteOf(j);
    function show() {
      var d = decision(j);
      keep.setAttribute("aria-pressed", String(d === "keep"));
      reject.setAttribute("aria-pressed", String(d === "reject"));
      card.classList.toggle("r-keep", d === "keep");
      card.classList.toggle("r-reject", d === "reject");
    }
    function set(d) {
      // Clicking the chosen decision again takes it back.
      var now = decision(j) === d ? "" : d;
      saved[j.id] = { d: now, n: note.value, t: take(j) };
      persist();
      show();
      counts();
    }
    keep.addEventListener("click", function () {
      set("keep");
    });
    reject.addEventListener("click", function () {
      set("reject");
    });
    note.addEventListener("input", function () {
      saved[j.id] = { d: decision(j), n: note.value, t: take(j) };
      persist();
    });
    bar.appendChild(keep);
    bar.appendChild(reject);
    bar.appendChild(note);
    show();
    return bar;
  }

  function card(j) {
    var a = el("article", "job s-" + j.state);
    a.id = "job-" + j.id;
    a.setAttribute("data-id", j.id);
    a.setAttribute("data-state", j.state);
    var media = el("div", "media");
    var inputs = el("div", "inputs");
    if (j.image) inputs.appendChild(picture(j.image, "image"));
    if (j.last_image) inputs.appendChild(picture(j.last_image, "last image"));
    media.appendChild(inputs);
    media.appendChild(j.video ? video(j) : el("div", "novideo", j.state));
    a.appendChild(media);

    var body = el("div", "body");
    var h = el("h3");
    h.appendChild(el("code", null, j.id));
    h.appendChild(el("span", "state", j.state));
    if (j.mismatch) h.appendChild(el("span", "flag", "differs from request"));
    if (j.billed_twice) h.appendChild(el("span", "flag", "possibly billed twice"));
    body.appendChild(h);
    if (j.prompt !== undefined) body.appendChild(el("p", "prompt", j.prompt));
    var dl = el("dl");
    function pair(k, v) {
      dl.appendChild(el("dt", null, k));
      dl.appendChild(el("dd", null, v));
    }
    if (j.negative) pair("negative", j.negative);
    j.params.forEach(function (kv) {
      pair(kv[0], kv[1]);
    });
    if (j.loras) pair("LoRA settings", j.loras);
    body.appendChild(dl);
    if (j.meta) body.appendChild(el("p", "meta", "video: " + j.meta));
    if (j.mismatch) body.appendChild(el("p", "error", "differs from its request: " + j.mismatch));
    if (j.error) {
      var e = el("p", "error");
      e.appendChild(el("b", null, j.error_label + ": "));
      e.appendChild(document.createTextNode(j.error));
      body.appendChild(e);
    }
    if (j.video_missing) body.appendChild(el("p", "error", "video missing: " + j.video));
    var ids = el("p", "ids", j.facts.join(" · "));
    if (j.request_id) ids.appendChild(document.createTextNode(" · request " + j.request_id));
    if (j.billed_twice) ids.appendChild(document.createTextNode(" · possibly billed twice"));
    if (j.sidecar) {
      ids.appendChild(document.createTextNode(" · "));
      var link = el("a", null, "provenance");
      link.href = j.sidecar;
      ids.appendChild(link);
    }
    body.appendChild(ids);
    if (j.video) body.appendChild(reviewBar(j, a));
    a.appendChild(body);
    return a;
  }

  function matches(j) {
    if (fState.value && j.state !== fState.value) return false;
    var f = fFlag.value;
    if (f === "failed" && j.state !== "failed") return false;
    if (f === "mismatched" && !j.mismatch) return false;
    if (f === "billed_twice" && !j.billed_twice) return false;
    var r = fReview.value;
    if (r) {
      var d = decision(j);
      if (r === "undecided" ? d !== "" || !j.video : d !== r) return false;
    }
    return true;
  }

  function more() {
    var end = Math.min(list.length, shown + PAGE);
    var frag = document.createDocumentFragment();
    for (; shown < end; shown++) frag.appendChild(card(data[list[shown]]));
    root.appendChild(frag);
    moreButton.hidden = shown >= list.length;
    root.setAttribute("data-rendered", String(shown));
    document.getElementById("matching").textContent =
      list.length + " of " + data.length + " jobs match · " + shown + " shown";
    // Still at the bottom (a tall window): the observer will not fire again by itself.
    if (nearBottom()) requestAnimationFrame(more);
  }

  function nearBottom() {
    return shown < list.length && moreBox.getBoundingClientRect().top < window.innerHeight + 600;
  }

  function apply() {
    list = [];
    for (var i = 0; i < data.length; i++) if (matches(data[i])) list.push(i);
    root.textContent = "";
    shown = 0;
    root.setAttribute("data-matching", String(list.length));
    more();
  }

  function counts() {
    var keep = 0;
    var reject = 0;
    for (var i = 0; i < data.length; i++) {
      var d = decision(data[i]);
      if (d === "keep") keep++;
      else if (d === "reject") reject++;
    }
    document.getElementById("decided").textContent = "decisions: " + keep + " keep, " + reject + " reject";
    return keep + reject;
  }

  function csvField(s) {
    s = String(s);
    return /[",\r\n]/.test(s) || /^\s|\s$/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }

  function download() {
    var rows = ["id,decision,note"];
    for (var i = 0; i < data.length; i++) {
      var j = data[i];
      var d = decision(j);
      if (d === "keep" || d === "reject") rows.push([j.id, d, noteOf(j)].map(csvField).join(","));
    }
    var blob = new Blob([rows.join("\n") + "\n"], { type: "text/csv" });
    var a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = "decisions.csv";
    document.body.appendChild(a);
    a.click();
    setTimeout(function () {
      URL.revokeObjectURL(a.href);
      a.remove();
    }, 10000);
  }

  // The state filter offers the states present, with their counts.
  var byState = {};
  data.forEach(function (j) {
    byState[j.state] = (byState[j.state] || 0) + 1;
  });
  Object.keys(byState).forEach(function (s) {
    var o = el("option", null, s + " (" + byState[s] + ")");
    o.value = s;
    fState.appendChild(o);
  });
  [fState, fFlag, fReview].forEach(function (s) {
    s.addEventListener("change", apply);
  });
  document.getElementById("download").addEventListener("click", download);
  moreButton.addEventListener("click", more);
  if ("IntersectionObserver" in window) {
    new IntersectionObserver(
      function (entries) {
        // Entries may be stale (a filter re-rendered since): ask where the bottom is now.
        if (entries.some(function (e) { return e.isIntersecting; }) && nearBottom()) more();
      },
      { rootMargin: "600px" }
    ).observe(moreBox);
  }
  // Scrolling near the bottom loads the next page at once (the observer's callbacks may lag).
  var scrollQueued = false;
  window.addEventListener(
    "scroll",
    function () {
      if (scrollQueued) return;
      scrollQueued = true;
      requestAnimationFrame(function () {
        scrollQueued = false;
        if (nearBottom()) more();
      });
    },
    { passive: true }
  );
  toolbar.hidden = false;
  counts();
  apply();
  // For tests and benchmarks: when the first cards were in the document.
  window.wanbatchReport = { ready: performance.now(), apply: apply, more: more, jobs: data.length };
})();
