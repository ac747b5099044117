// Lectern client script. Plain ES2017, no inline scripts, no eval (CSP: 'self').
(function () {
  "use strict";

  var HISTORY_KEY = "htmx-history-cache";
  var KEY_PREFIX = "lectern.";
  var CHANNEL_NAME = "lectern.auth";
  var SIGNED_OUT = "signed-out";
  var DEADLINE = "deadline";

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

  function postToTabs(message) {
    if (!channel) {
      return;
    }
    try {
      channel.postMessage(message);
    } catch (e) {
      // Ignore: other tabs re-check with the server on their next request.
    }
  }

  function broadcastSignedOut() {
    postToTabs({ type: SIGNED_OUT });
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
      // Another tab heard of a later deadline (it loaded a page, or its learner chose to stay).
      if (data && data.type === DEADLINE && clock && data.idleUntil > clock.idleUntil) {
        newDeadline(data.idleUntil, data.now);
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

  // ---- Typed work survives an idle timeout -------------------------------------------------
  // A form marked data-draft keeps what was typed into its text fields in this page's own
  // storage (lectern.draft.<learner>.<page>.<form>) as it is typed, and gets it back when the same
  // learner opens the page again; a submit drops it, and any sign-out clears lectern.* storage.
  // On a shared computer (its pages send heartbeats) drafts live in this tab's session storage
  // only, so closing the browser leaves nothing typed behind for the next person.
  function draftStore() {
    var shared = Number(document.body.getAttribute("data-heartbeat")) > 0;
    return shared ? window.sessionStorage : window.localStorage;
  }

  function draftKey(form) {
    var learner = document.body.getAttribute("data-learner");
    if (!learner || !form.id) {
      return null;
    }
    return KEY_PREFIX + "draft." + learner + "." + window.location.pathname + "." + form.id;
  }

  function draftFields(form) {
    return Array.prototype.filter.call(form.elements, function (el) {
      return el.name && (el.tagName === "TEXTAREA" || (el.tagName === "INPUT" && el.type === "text"));
    });
  }

  function keepDrafts() {
    document.querySelectorAll("form[data-draft]").forEach(function (form) {
      var key = draftKey(form);
      if (!key) {
        return;
      }
      try {
        var saved = JSON.parse(draftStore().getItem(key) || "null");
        if (saved) {
          draftFields(form).forEach(function (el) {
            if (!el.value && typeof saved[el.name] === "string") {
              el.value = saved[el.name];
            }
          });
        }
      } catch (e) {
        // Storage unavailable or the draft unreadable: nothing to restore.
      }
      form.addEventListener("input", function () {
        var draft = {};
        draftFields(form).forEach(function (el) {
          draft[el.name] = el.value;
        });
        try {
          draftStore().setItem(key, JSON.stringify(draft));
        } catch (e) {
          // Storage full or unavailable: the draft is not kept.
        }
      });
      form.addEventListener("submit", function () {
        try {
          draftStore().removeItem(key);
        } catch (e) {
          // Nothing kept.
        }
      });
    });
  }

  // ---- The sign-in's clock ------------------------------------------------------------------
  // Every signed-in page warns before the idle timeout, in every open tab at once; "Stay signed
  // in" in any of them is activity and dismisses the warning everywhere (BroadcastChannel), so
  // background tabs never keep a sign-in alive by themselves. On a shared computer, open pages
  // send a heartbeat: when the last one closes, the server ends the sign-in.
  var clock = null;

  function readClock() {
    var body = document.body;
    if (!body.hasAttribute("data-idle-until")) {
      return null;
    }
    var serverNow = Number(body.getAttribute("data-now"));
    return {
      // The page's own clock, minus the server's: deadlines are kept in the page's time.
      offset: Date.now() / 1000 - serverNow,
      idleUntil: Number(body.getAttribute("data-idle-until")),
      warnBefore: Number(body.getAttribute("data-warn-before")),
      heartbeat: Number(body.getAttribute("data-heartbeat"))
    };
  }

  function secondsLeft() {
    return clock.idleUntil + clock.offset - Date.now() / 1000;
  }

  var warning = null;
  var returnFocus = null;

  function showWarning() {
    if (!warning || warning.open) {
      return;
    }
    returnFocus = document.activeElement;
    if (typeof warning.showModal === "function") {
      warning.showModal();
    } else {
      warning.setAttribute("open", "");
    }
    var stay = document.getElementById("idle-warning-stay");
    if (stay) {
      stay.focus();
    }
  }

  function hideWarning() {
    if (!warning || !warning.open) {
      return;
    }
    if (typeof warning.close === "function") {
      warning.close();
    } else {
      warning.removeAttribute("open");
    }
    if (returnFocus && typeof returnFocus.focus === "function") {
      returnFocus.focus();
    }
    returnFocus = null;
  }

  function newDeadline(idleUntil, serverNow) {
    clock.offset = Date.now() / 1000 - serverNow;
    clock.idleUntil = idleUntil;
    if (secondsLeft() > clock.warnBefore) {
      hideWarning();
    }
  }

  function tick() {
    if (!clock) {
      return;
    }
    var left = secondsLeft();
    if (left <= 0) {
      // Time ran out: the server says so, and where to go (typed work is kept already).
      clock = null;
      window.location.replace(window.location.href);
      return;
    }
    if (left <= clock.warnBefore) {
      var countdown = document.getElementById("idle-warning-countdown");
      if (countdown) {
        var whole = Math.ceil(left);
        countdown.textContent = Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
      }
      showWarning();
    }
  }

  function stay() {
    window
      .fetch("/account/stay", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrfToken(), "HX-Request": "true" }
      })
      .then(function (response) {
        if (!response.ok) {
          window.location.replace(window.location.href);
          return null;
        }
        return response.json();
      })
      .then(function (fresh) {
        if (!fresh) {
          return;
        }
        newDeadline(fresh.idle_until, fresh.now);
        postToTabs({ type: DEADLINE, idleUntil: fresh.idle_until, now: fresh.now });
      })
      .catch(function () {
        // Offline: the warning stays, and the server decides when time is up.
      });
  }

  function heartbeat() {
    window
      .fetch("/heartbeat", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrfToken() }
      })
      .then(function (response) {
        if (response.status === 401) {
          window.location.replace(window.location.href);
        }
      })
      .catch(function () {
        // Offline: the next one tries again.
      });
  }

  function startClock() {
    clock = readClock();
    if (!clock) {
      return;
    }
    warning = document.getElementById("idle-warning");
    var stayButton = document.getElementById("idle-warning-stay");
    if (stayButton) {
      stayButton.addEventListener("click", stay);
    }
    var signOutButton = document.getElementById("idle-warning-sign-out");
    if (signOutButton) {
      signOutButton.addEventListener("click", function () {
        var form = document.querySelector("form.signout-form");
        if (form && typeof form.requestSubmit === "function") {
          form.requestSubmit();
        } else if (form) {
          form.submit();
        }
      });
    }
    if (warning) {
      // Escape is not "stay": the warning stays until the learner chooses.
      warning.addEventListener("cancel", function (event) {
        event.preventDefault();
      });
    }
    // This page's deadline is the newest any tab has heard of.
    postToTabs({ type: DEADLINE, idleUntil: clock.idleUntil, now: Date.now() / 1000 - clock.offset });
    window.setInterval(tick, 1000);
    if (clock.heartbeat > 0) {
      window.setInterval(heartbeat, clock.heartbeat * 1000);
    }
  }

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
    keepDrafts();
    startClock();

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
      // A learner's request moves the idle deadline (the server says where to): this tab, and
      // the others, learn it.
      body.addEventListener("htmx:afterRequest", function (evt) {
        var xhr = evt.detail && evt.detail.xhr;
        var said = xhr && xhr.getResponseHeader("X-Lectern-Idle-Until");
        var parts = said ? /^(\d+); now=(\d+)$/.exec(said) : null;
        if (parts && clock) {
          var idleUntil = Number(parts[1]);
          var now = Number(parts[2]);
          newDeadline(idleUntil, now);
          postToTabs({ type: DEADLINE, idleUntil: idleUntil, now: now });
        }
      });

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
