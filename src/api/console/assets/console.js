// tracegate console: the little behaviour the server-rendered pages need. No inline scripts
// (the Content-Security-Policy forbids them); everything hangs off data-* attributes.
"use strict";

(function () {
  // <time datetime="..." data-local>: show the reader's local time, keep UTC in the title.
  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (el) {
      var d = new Date(el.getAttribute("datetime"));
      if (isNaN(d.getTime())) return;
      el.title = el.getAttribute("datetime");
      el.textContent = d.toLocaleString(undefined, {
        year: "numeric", month: "2-digit", day: "2-digit",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
    });
  }

  // <section data-live="URL" data-live-interval="5000">: while the element is present, fetch
  // URL (the same page's fragment) and swap the element for the answer's element of the same id.
  function live(root) {
    root.querySelectorAll("[data-live]").forEach(function (el) {
      var url = el.getAttribute("data-live");
      var every = parseInt(el.getAttribute("data-live-interval") || "5000", 10);
      // The server's last answer: the page's copy is localised by localTimes, so comparing with
      // it would see a change on every tick.
      var last = el.innerHTML;
      var timer = setInterval(function () {
        if (document.hidden) return;
        fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.text() : null; })
          .then(function (text) {
            if (text === null) return;
            var doc = new DOMParser().parseFromString(text, "text/html");
            var fresh = doc.getElementById(el.id);
            if (!fresh) return;
            var current = document.getElementById(el.id);
            if (!current || last === fresh.innerHTML) return;
            last = fresh.innerHTML;
            current.replaceWith(fresh);
            localTimes(fresh);
            document.dispatchEvent(new CustomEvent("console:swapped", { detail: fresh }));
            if (!fresh.hasAttribute("data-live")) clearInterval(timer);
            var status = document.getElementById("live-status");
            if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
          })
          .catch(function () { /* the next tick tries again */ });
      }, every);
    });
  }

  // <form data-confirm="question">: ask before submitting.
  function confirms(root) {
    root.querySelectorAll("form[data-confirm]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        if (!window.confirm(form.getAttribute("data-confirm"))) event.preventDefault();
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    live(document); // first: it keeps the server's copy of each live section
    localTimes(document);
    confirms(document);
  });
})();

// Trace page (console/trace.rs): bring the span picked by ?span= into view.
document.addEventListener("DOMContentLoaded", function () {
  var row = document.querySelector("#waterfall tr.span[aria-current]");
  if (row && row.scrollIntoView) row.scrollIntoView({ block: "center" });
});

// Order page (console/order.rs): a wide swimlane (`.scroll[data-scroll-end][id]`) opens scrolled
// to its newest steps (on the right), and keeps the reader's position when a live update
// replaces it ("console:swapped", sent by live()).
(function () {
  var positions = {};
  function place(root) {
    root.querySelectorAll(".scroll[data-scroll-end][id]").forEach(function (el) {
      var left = positions[el.id];
      el.scrollLeft = left === undefined ? el.scrollWidth : left;
      pinLanes(el);
    });
  }
  // The lane names (`g.lane`) stay at the left edge of the visible part.
  function pinLanes(el) {
    var shift = "translate(" + el.scrollLeft + ",0)";
    el.querySelectorAll("g.lane").forEach(function (g) { g.setAttribute("transform", shift); });
  }
  document.addEventListener("scroll", function (event) {
    var el = event.target;
    if (el && el.matches && el.matches(".scroll[data-scroll-end][id]")) {
      // At the right end: stay at the end when new steps arrive.
      positions[el.id] = el.scrollLeft + el.clientWidth >= el.scrollWidth - 2 ? undefined : el.scrollLeft;
      pinLanes(el);
    }
  }, true);
  document.addEventListener("DOMContentLoaded", function () { place(document); });
  document.addEventListener("console:swapped", function (event) { place(event.detail); });
})();
