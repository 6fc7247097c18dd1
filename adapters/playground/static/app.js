// threadedit playground: small, dependency-free. Every form also works without this script;
// with it, forms post in the background and the thread updates without reloading the page.
(() => {
  "use strict";
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
  const AUTHOR_KEY = "threadedit.author";
  const FADE_MS = 300; // matches .alert's opacity transition
  let clockOffset = 0; // server time minus this browser's, so timers match the server

  function localTimes(root) {
    for (const el of $$("time[datetime]", root)) {
      const d = new Date(el.getAttribute("datetime"));
      if (isNaN(d)) continue;
      const sameDay = d.toDateString() === new Date().toDateString();
      el.textContent = sameDay
        ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
        : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
      el.title = d.toLocaleString();
    }
  }

  function elapsed(seconds) {
    const s = Math.max(0, Math.floor(seconds));
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  }

  function tick() {
    const now = (Date.now() + clockOffset) / 1000;
    for (const el of $$(".progress[data-since]")) {
      const since = parseFloat(el.dataset.since);
      const out = $(".elapsed", el);
      if (out && !isNaN(since)) out.textContent = elapsed(now - since);
    }
  }

  // --- the gallery: pick exactly two versions to compare ----------------------------------
  function gallery() {
    const form = $("#compare-form");
    if (!form) return;
    const button = $("#compare-button");
    const picked = [];
    const update = () => {
      button.disabled = picked.length !== 2;
      $("#compare-hint").textContent = picked.length === 2
        ? `Compare v${picked[0].value} and v${picked[1].value}.`
        : "Tick two versions to see them side by side.";
    };
    for (const box of $$("input[name=v]", form)) {
      box.addEventListener("change", () => {
        const at = picked.indexOf(box);
        if (box.checked && at < 0) picked.push(box);
        if (!box.checked && at >= 0) picked.splice(at, 1);
        while (picked.length > 2) picked.shift().checked = false; // keep the latest two
        update();
      });
    }
    update();
  }

  // --- the thread view ----------------------------------------------------------------------
  function thread() {
    const body = document.body;
    const maxFiles = parseInt(body.dataset.maxFiles, 10);
    const maxBytes = parseInt(body.dataset.maxBytes, 10);
    const busyPoll = parseInt(body.dataset.pollMs, 10);
    const idlePoll = parseInt(body.dataset.idlePollMs, 10);
    const sessionBox = $("#session");
    const alertBox = $("#alert");
    const nameInput = $("#author");
    const composer = $("#composer");
    let sessionId = sessionBox.dataset.session || "";
    let files = [];
    let pollTimer = null;
    let refreshing = 0;

    nameInput.value = localStorage.getItem(AUTHOR_KEY) || "you";
    nameInput.addEventListener("input", () => {
      localStorage.setItem(AUTHOR_KEY, nameInput.value.trim() || "you");
    });
    const author = () => nameInput.value.trim() || "you";

    // One line above the composer. A failure stays until an action succeeds or it is dismissed;
    // a success note fades by itself, since nothing needs doing about it.
    const alertText = $(".alert-text", alertBox);
    let noticeTimer = null;

    function say(text, kind = "error") {
      clearTimeout(noticeTimer);
      alertText.textContent = text;
      alertBox.className = kind === "error" ? "alert" : "alert notice";
      alertBox.dataset.kind = kind;
      alertBox.setAttribute("role", kind === "error" ? "alert" : "status");
      alertBox.hidden = !text;
      // How long a success note ("v2 approved", "Settings: ...") stays, read when it is shown.
      const stay = parseInt(document.body.dataset.noticeMs, 10) || 4000;
      if (text && kind !== "error") noticeTimer = setTimeout(fadeNotice, stay);
    }

    function fadeNotice() {
      alertBox.classList.add("leaving");
      noticeTimer = setTimeout(() => say(""), FADE_MS);
    }

    $(".alert-close", alertBox).addEventListener("click", () => say(""));

    async function send(url, data) {
      data.set("author", author());
      let response;
      try {
        response = await fetch(url, { method: "POST", body: data, headers: { Accept: "application/json" } });
      } catch (e) {
        throw new Error("The playground did not answer; is it still running?");
      }
      let answer = {};
      try { answer = await response.json(); } catch (e) { /* not JSON: use the status below */ }
      if (!response.ok) throw new Error(answer.error || `The playground answered ${response.status}.`);
      return answer;
    }

    // Conversation updates: poll a small state document, fetch the fragment when it changed.
    const conversation = () => $("#conversation", sessionBox);
    const currentStamp = () => { const h = $(".session-head", sessionBox); return h ? h.dataset.stamp : ""; };

    async function refresh(forceBottom = false) {
      if (!sessionId) return;
      const mine = ++refreshing;
      const response = await fetch(`/s/${sessionId}/fragment`, { headers: { Accept: "text/html" } });
      if (!response.ok || mine !== refreshing) return;
      const html = await response.text();
      const old = conversation();
      const atBottom = !old || old.scrollHeight - old.scrollTop - old.clientHeight < 80;
      const keepTop = old ? old.scrollTop : 0;
      const openSettings = !!$("details.settings[open]", sessionBox);
      sessionBox.innerHTML = html;
      const fresh = conversation();
      if (openSettings) { const d = $("details.settings", sessionBox); if (d) d.open = true; }
      localTimes(sessionBox);
      tick();
      if (fresh) {
        fresh.dataset.stick = forceBottom || atBottom ? "1" : "0";
        fresh.scrollTop = forceBottom || atBottom ? fresh.scrollHeight : keepTop;
      }
      const head = $(".session-head", sessionBox);
      if (head) document.title = `${head.dataset.title} · threadedit playground`;
    }

    async function refreshSessions() {
      const response = await fetch(`/sessions/fragment?current=${sessionId}`);
      if (response.ok) { $("#sessions").innerHTML = await response.text(); localTimes($("#sessions")); }
    }

    async function poll() {
      clearTimeout(pollTimer);
      let wait = idlePoll;
      if (sessionId) {
        try {
          const response = await fetch(`/s/${sessionId}/state`, { headers: { Accept: "application/json" } });
          if (response.ok) {
            const state = await response.json();
            clockOffset = state.now * 1000 - Date.now();
            wait = state.poll_ms;
            if (state.stamp !== currentStamp()) {
              const wasBusy = ($(".session-head", sessionBox) || {}).dataset?.busy === "true";
              await refresh();
              if (wasBusy && !state.busy) refreshSessions();
            }
          }
        } catch (e) { /* the server may be restarting; try again later */ }
      }
      pollTimer = setTimeout(poll, document.hidden ? Math.max(wait, idlePoll) : wait);
    }

    // Images would otherwise push the newest message out of view as they load.
    sessionBox.addEventListener("load", (event) => {
      const conv = conversation();
      if (event.target.tagName === "IMG" && conv && conv.dataset.stick === "1") conv.scrollTop = conv.scrollHeight;
    }, true);
    sessionBox.addEventListener("scroll", (event) => {
      const conv = event.target;
      if (conv.id === "conversation") conv.dataset.stick = conv.scrollHeight - conv.scrollTop - conv.clientHeight < 80 ? "1" : "0";
    }, true);

    // Controls and settings: any form in the session area marked data-action.
    sessionBox.addEventListener("submit", async (event) => {
      const form = event.target.closest("form[data-action]");
      if (!form) return;
      event.preventDefault();
      const button = $("button", form);
      if (button) button.disabled = true;
      try {
        const answer = await send(form.action, new FormData(form));
        const menu = form.closest("details");
        if (menu) menu.open = false; // applied: the new settings show in the summary
        say(answer.notice || "", "notice"); // a new note, or none: the last one is old news
        await refresh(form.dataset.action === "control" && !answer.notice);
        poll();
      } catch (e) {
        say(e.message);
        if (button) button.disabled = false;
      }
    });

    // The welcome page's examples fill the composer.
    sessionBox.addEventListener("click", (event) => {
      const chip = event.target.closest("[data-fill]");
      if (!chip || !composer) return;
      composer.elements.instruction.value = chip.dataset.fill;
      composer.elements.instruction.focus();
    });

    if (composer) composerSetup();

    function composerSetup() {
      const list = $("#attachments");
      const picker = $("#files");
      const text = composer.elements.instruction;
      const sendButton = $("#send");

      function render() {
        for (const img of $$("img", list)) URL.revokeObjectURL(img.src);
        list.innerHTML = "";
        files.forEach((file, i) => {
          const li = document.createElement("li");
          const img = document.createElement("img");
          img.src = URL.createObjectURL(file);
          img.alt = file.name;
          const name = document.createElement("span");
          name.className = "name";
          name.textContent = file.name;
          const remove = document.createElement("button");
          remove.type = "button";
          remove.textContent = "×";
          remove.setAttribute("aria-label", `Remove ${file.name}`);
          remove.addEventListener("click", () => { files.splice(i, 1); render(); });
          li.append(img, name, remove);
          list.append(li);
        });
        list.hidden = files.length === 0;
      }

      function add(chosen) {
        for (const file of chosen) {
          if (files.length >= maxFiles) { say(`Attach at most ${maxFiles} images to one message.`); break; }
          files.push(file);
        }
        render();
      }

      picker.addEventListener("change", () => { add(Array.from(picker.files)); picker.value = ""; });
      for (const name of ["dragenter", "dragover"]) {
        composer.addEventListener(name, (e) => { e.preventDefault(); composer.classList.add("dragging"); });
      }
      composer.addEventListener("dragleave", (e) => {
        if (!composer.contains(e.relatedTarget)) composer.classList.remove("dragging");
      });
      composer.addEventListener("drop", (e) => {
        e.preventDefault();
        composer.classList.remove("dragging");
        add(Array.from(e.dataTransfer.files).filter((f) => f.type.startsWith("image/") || !f.type));
      });
      // A file dropped beside the composer must not make the browser leave the page to show it.
      window.addEventListener("dragover", (e) => e.preventDefault());
      window.addEventListener("drop", (e) => e.preventDefault());

      text.addEventListener("keydown", (e) => {
        if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); composer.requestSubmit(); }
      });
      text.addEventListener("input", () => { text.style.height = "auto"; text.style.height = `${Math.min(text.scrollHeight, 200)}px`; });

      composer.addEventListener("submit", async (event) => {
        event.preventDefault();
        const total = files.reduce((n, f) => n + f.size, text.value.length);
        if (total > maxBytes) {
          say(`That message is larger than the playground takes (${Math.round(maxBytes / 1048576)} MB in all); attach fewer or smaller images.`);
          return;
        }
        const data = new FormData();
        data.set("instruction", text.value);
        for (const file of files) data.append("files", file, file.name);
        sendButton.disabled = true;
        try {
          const answer = await send(sessionId ? `/s/${sessionId}/messages` : "/messages", data);
          say("");
          text.value = "";
          text.style.height = "";
          files = [];
          render();
          if (!sessionId) {
            sessionId = String(answer.session);
            sessionBox.dataset.session = sessionId;
            composer.action = `/s/${sessionId}/messages`;
            text.placeholder = "Say what to change (Enter sends, Shift+Enter adds a line)";
            history.pushState({ session: sessionId }, "", answer.url);
            refreshSessions();
          }
          await refresh(true);
          poll();
        } catch (e) {
          say(e.message);
        } finally {
          sendButton.disabled = false;
        }
      });
    }

    // Narrow screens: the session list is a drawer. Any tap outside it, or Escape, closes it.
    const toggle = $("#sessions-toggle");
    const drawer = (open) => {
      document.body.classList.toggle("sessions-open", open);
      toggle.setAttribute("aria-expanded", String(open));
    };
    toggle.addEventListener("click", () => drawer(!document.body.classList.contains("sessions-open")));
    document.addEventListener("click", (event) => {
      if (document.body.classList.contains("sessions-open")
          && !event.target.closest("#sidebar, #sessions-toggle")) drawer(false);
    });
    document.addEventListener("keydown", (event) => { if (event.key === "Escape") drawer(false); });

    window.addEventListener("popstate", () => location.reload());
    const conv = conversation();
    if (conv) { conv.dataset.stick = "1"; conv.scrollTop = conv.scrollHeight; }
    poll();
  }

  document.addEventListener("DOMContentLoaded", () => {
    localTimes(document);
    if (document.body.dataset.page === "thread") thread();
    if (document.body.dataset.page === "gallery") gallery();
    tick();
    setInterval(tick, 500);
  });
})();
