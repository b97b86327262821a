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
            if (!current || current.innerHTML === fresh.innerHTML) return;
            current.replaceWith(fresh);
            localTimes(fresh);
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
    localTimes(document);
    live(document);
    confirms(document);
  });
})();
