// The SAC's pages work without this script; it adds what needs one:
// commands still pending or sent update themselves (a setting's value too, once its command
// ends), a running job's page its progress, and a key upload shows its progress.
"use strict";

function followCommands() {
  const rows = document.querySelectorAll("tr[data-command]");
  rows.forEach((row) => {
    const id = row.getAttribute("data-command");
    const state = row.querySelector("[data-state]");
    const result = row.querySelector("[data-result]");
    const poll = async () => {
      try {
        const answer = await fetch(`/commands/${id}.json`, { credentials: "same-origin" });
        if (answer.ok) {
          const command = await answer.json();
          state.textContent = command.state;
          state.className = `state s-${command.state}`;
          result.textContent = command.result || "";
          if (command.final) {
            row.removeAttribute("data-command");
            if (row.hasAttribute("data-setting")) refreshSetting(row);
            if (command.valve) {
              document.querySelectorAll("[data-valve]").forEach((valve) => {
                valve.textContent = command.valve;
                if (valve.classList.contains("valve")) valve.className = `valve v${command.valve_state}`;
              });
            }
            return;
          }
        }
      } catch (e) {
        // the SAC restarting: try again later
      }
      setTimeout(poll, 1000);
    };
    setTimeout(poll, 1000);
  });
}

function followJob() {
  const card = document.querySelector("[data-job][data-live]");
  if (!card) return;
  const id = card.getAttribute("data-job");
  const put = (selector, text) => {
    const element = card.querySelector(selector);
    if (element) element.textContent = text;
  };
  const number = (n) => n.toLocaleString("en");
  const poll = async () => {
    try {
      const answer = await fetch(`/jobs/${id}.json`, { credentials: "same-origin" });
      if (answer.ok) {
        const job = await answer.json();
        const c = job.counts;
        const ended = c.done + c.failed + c.expired + c.cancelled;
        Object.entries(c).forEach(([state, n]) => put(`[data-count="${state}"]`, number(n)));
        put("[data-job-state]", job.queuing ? "queuing" : job.state);
        put("[data-job-queuing]", job.queuing ? `queuing ${number(job.queued)} of ${number(job.planned)}` : "");
        put("[data-job-ended]", number(ended));
        const bar = card.querySelector("[data-job-progress]");
        bar.max = Math.max(job.planned, 1);
        bar.value = ended;
        const rows = card.querySelector("[data-job-failures]");
        if (job.failures.length) {
          rows.replaceChildren(...job.failures.map((f) => {
            const row = document.createElement("tr");
            const link = document.createElement("a");
            link.href = `/meters/${encodeURIComponent(f.ldn)}`;
            link.textContent = f.ldn;
            const state = document.createElement("span");
            state.className = `state s-${f.state}`;
            state.textContent = f.state;
            [link, state, document.createTextNode(f.reason)].forEach((part) => {
              const cell = document.createElement("td");
              cell.appendChild(part);
              row.appendChild(cell);
            });
            return row;
          }));
        }
        if (job.state !== "running") {
          const cancel = card.querySelector("[data-job-cancel]");
          if (cancel) cancel.remove();
          return;
        }
      }
    } catch (e) {
      // the SAC restarting: try again later
    }
    setTimeout(poll, 2000);
  };
  setTimeout(poll, 1000);
}

// a setting's command ended: its row's last known value and read time, from the page anew;
// the session stores what it read just after it finishes the command, so until the read
// time changes, a few more times
async function refreshSetting(row, tries = 5) {
  const readAt = row.querySelector("[data-read-at]");
  const before = readAt ? readAt.textContent : "";
  try {
    const answer = await fetch(location.pathname, { credentials: "same-origin" });
    if (answer.ok) {
      const page = new DOMParser().parseFromString(await answer.text(), "text/html");
      const fresh = page.getElementById(row.id);
      if (fresh) {
        ["[data-last]", "[data-read-at]"].forEach((cell) => {
          const now = row.querySelector(cell);
          const then = fresh.querySelector(cell);
          if (now && then) now.replaceChildren(...then.childNodes);
        });
      }
    }
  } catch (e) {
    // the SAC restarting: the value shows at the next visit
  }
  if (readAt && readAt.textContent === before && tries > 1) {
    setTimeout(() => refreshSetting(row, tries - 1), 1000);
  }
}

function uploadWithProgress() {
  const form = document.getElementById("upload-form");
  if (!form || !window.FormData) return;
  const bar = document.getElementById(form.getAttribute("data-progress"));
  const status = document.getElementById("upload-status");
  form.addEventListener("submit", (event) => {
    const file = form.querySelector("input[type=file]").files[0];
    if (!file) return;
    event.preventDefault();
    form.querySelector("input[name=filename]").value = file.name;
    const data = new FormData(form);
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    bar.hidden = false;
    request.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        bar.value = Math.round((e.loaded / e.total) * 100);
        status.textContent = `Uploading: ${bar.value} %`;
      }
    };
    request.upload.onload = () => {
      bar.removeAttribute("value");
      status.textContent = `Checking ${file.name}…`;
    };
    request.onload = () => {
      document.open();
      document.write(request.responseText);
      document.close();
      history.replaceState(null, "", form.action);
    };
    request.onerror = () => {
      status.textContent = "The upload failed: check the connection and try again.";
    };
    request.send(data);
  });
}

function busyForms() {
  document.querySelectorAll("form[data-busy]").forEach((form) => {
    form.addEventListener("submit", () => {
      const button = form.querySelector("button[type=submit]");
      button.disabled = true;
      button.textContent = form.getAttribute("data-busy");
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  followCommands();
  followJob();
  uploadWithProgress();
  busyForms();
});
