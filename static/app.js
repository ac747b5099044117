// Lectern client script. Plain ES2017, no inline scripts, no eval (CSP: 'self').
(function () {
  "use strict";

  var HISTORY_KEY = "htmx-history-cache";
  var KEY_PREFIX = "lectern.";
  var CHANNEL_NAME = "lectern.auth";
  var SIGNED_OUT = "signed-out";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") || "" : "";
  }

  function clearStorage(storage) {
    if (!storage) {
      return;
    }
    storage.removeItem(HISTORY_KEY);
    var doomed = [];
    for (var i = 0; i < storage.length; i++) {
      var key = storage.key(i);
      if (key !== null && key.indexOf(KEY_PREFIX) === 0) {
        doomed.push(key);
      }
    }
    doomed.forEach(function (key) {
      storage.removeItem(key);
    });
  }

  function clearClientState() {
    try {
      clearStorage(window.localStorage);
    } catch (e) {
      // Storage may be unavailable (privacy mode, disabled cookies).
    }
    try {
      clearStorage(window.sessionStorage);
    } catch (e) {
      // Same as above.
    }
  }
  window.clearClientState = clearClientState;

  var channel = null;
  if (typeof window.BroadcastChannel === "function") {
    try {
      channel = new window.BroadcastChannel(CHANNEL_NAME);
    } catch (e) {
      channel = null;
    }
  }

  function broadcastSignedOut() {
    if (!channel) {
      return;
    }
    try {
      channel.postMessage({ type: SIGNED_OUT });
    } catch (e) {
      // Ignore: other tabs re-check with the server on their next request.
    }
  }

  function onSignOut() {
    clearClientState();
    broadcastSignedOut();
  }

  function isAuthenticatedPage() {
    return document.body !== null && document.body.hasAttribute("data-authenticated");
  }

  if (channel) {
    channel.addEventListener("message", function (event) {
      var data = event.data;
      if (data && data.type === SIGNED_OUT && isAuthenticatedPage()) {
        window.location.replace("/?signed_out=1");
      }
    });
  }

  // A page restored from the back/forward cache was not asked for again: Chromium keeps even
  // no-store pages there for a while, and Safari drops BroadcastChannel messages to them. Ask the
  // server whether the session still stands (an htmx-style request to a learner's page answers
  // 401 with HX-Redirect when it does not) and leave for the login page if it is gone.
  function recheckSession() {
    var here = window.location.pathname + window.location.search;
    var leave = function (to) {
      clearClientState();
      window.location.replace(to || "/login?next=" + encodeURIComponent(here));
    };
    if (typeof window.fetch !== "function") {
      window.location.reload();
      return;
    }
    window
      .fetch("/dashboard", {
        method: "HEAD",
        credentials: "same-origin",
        cache: "no-store",
        headers: { "HX-Request": "true" }
      })
      .then(function (response) {
        if (response.status === 401) {
          var to = response.headers.get("HX-Redirect") || "";
          var reason = /[?&]reason=([a-z_]+)/.exec(to);
          leave("/login?next=" + encodeURIComponent(here) + (reason ? "&reason=" + reason[1] : ""));
        }
      })
      .catch(function () {
        // Offline: show nothing stale either; the reload asks again.
        window.location.reload();
      });
  }

  window.addEventListener("pageshow", function (event) {
    if (event.persisted && isAuthenticatedPage()) {
      recheckSession();
    }
  });

  // Sign-out: our storage is cleared as the request leaves (harmless if it is
  // refused). Other tabs are told only from the signed-out homepage, i.e. once
  // the server has confirmed it. Capture phase, so it runs for every
  // form.signout-form, including ones added later.
  document.addEventListener(
    "submit",
    function (event) {
      var form = event.target;
      if (form && form.matches && form.matches("form.signout-form")) {
        clearClientState();
      }
    },
    true
  );

  // Times are written in UTC (readable without JavaScript); shown in the learner's own time zone.
  function localTimes(root) {
    if (!root.querySelectorAll || typeof Intl !== "object") {
      return;
    }
    var format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
    root.querySelectorAll("time[datetime]:not([data-local])").forEach(function (el) {
      var at = new Date(el.getAttribute("datetime"));
      if (!isNaN(at.getTime())) {
        el.setAttribute("title", el.textContent);
        el.textContent = format.format(at);
        el.setAttribute("data-local", "");
      }
    });
  }

  function init() {
    var body = document.body;
    localTimes(document);

    if (body.hasAttribute("data-signed-out")) {
      onSignOut();
    }

    if (window.htmx) {
      body.addEventListener("htmx:configRequest", function (evt) {
        var token = csrfToken();
        if (token && evt.detail && evt.detail.headers) {
          evt.detail.headers["X-CSRF-Token"] = token;
        }
      });

      body.addEventListener("htmx:beforeRequest", function (evt) {
        var elt = evt.detail && evt.detail.elt;
        if (elt && elt.closest && elt.closest(".signout-form")) {
          clearClientState();
        }
      });

      // Content swapped in (out of band too): its times in the learner's zone, and the keyboard
      // focus back on the control that was used, which the swap replaced.
      var settled = function () {
        localTimes(document);
        var focus = document.querySelector("[data-focus]");
        if (focus && typeof focus.focus === "function") {
          focus.removeAttribute("data-focus");
          focus.focus();
        }
      };
      body.addEventListener("htmx:afterSettle", settled);
      body.addEventListener("htmx:oobAfterSwap", settled);

      body.addEventListener("htmx:responseError", function (evt) {
        var xhr = evt.detail && evt.detail.xhr;
        if (xhr && xhr.status === 401 && !xhr.getResponseHeader("HX-Redirect")) {
          window.location.assign("/login");
        }
        // A refused sign-out (a stale CSRF token, e.g. after signing in again in
        // another tab): reload, so the page gets a fresh token and shows the truth.
        var elt = evt.detail && evt.detail.elt;
        if (xhr && xhr.status === 403 && elt && elt.closest && elt.closest(".signout-form")) {
          window.location.reload();
        }
      });
    }

    var invalid = document.querySelector('[aria-invalid="true"]');
    if (invalid && typeof invalid.focus === "function") {
      invalid.focus();
    }
  }

  // Wait for DOMContentLoaded (it fires after every deferred script, htmx
  // included, has run) unless the document has already finished loading.
  if (document.readyState === "complete") {
    init();
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})();
