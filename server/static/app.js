// The search page: send the chosen crop to POST /search and draw the ranked identities.
"use strict";

const form = document.getElementById("search-form");
const fileInput = document.getElementById("file-input");
const dropZone = document.getElementById("drop-zone");
const preview = document.getElementById("query-preview");
const hint = document.getElementById("drop-hint");
const button = document.getElementById("search-button");
const statusLine = document.getElementById("status");
const results = document.getElementById("results");
const keyForm = document.getElementById("key-form");
const keyInput = document.getElementById("key-input");
const keyStatus = document.getElementById("key-status");
const cropCount = document.getElementById("crop-count");
const KEY_SLOT = "reid-api-key";  // sessionStorage: this tab only, gone when it closes
let chosen = [];  // the query: one crop, or several crops of one person (fused by the server)

function apiKey() {
  return sessionStorage.getItem(KEY_SLOT);
}

function keyHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

function showKeyState(askForKey) {
  keyForm.hidden = !askForKey;
  keyStatus.hidden = askForKey || !apiKey();
  if (askForKey) keyInput.focus();
}

// An <img src> cannot send the key: with a key, crops are fetched with it and shown from memory.
async function showImage(img, url) {
  if (!apiKey()) {
    img.src = url;
    return;
  }
  try {
    const response = await fetch(url, { headers: keyHeaders() });
    if (response.ok) img.src = URL.createObjectURL(await response.blob());
  } catch (err) {
    img.alt = `could not load: ${err}`;
  }
}

function choose(files) {
  if (!files || files.length === 0) return;
  chosen = [...files];
  preview.src = URL.createObjectURL(chosen[0]);
  preview.hidden = false;
  hint.hidden = true;
  const more = chosen.length - 1;
  cropCount.textContent = more ? `+ ${more} more crop${more > 1 ? "s" : ""} of this person` : "";
  cropCount.hidden = chosen.length < 2;
  button.disabled = false;
  search();
}

// Camera numbers as in file names: "1, c3" -> [1, 3] (c1 is camera 1).
function cameraList(text) {
  return text.split(/[ ,]+/).map((s) => s.replace(/^c/i, "")).filter((s) => s !== "")
    .map(Number).filter(Number.isInteger);
}

function say(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function element(tag, props, children) {
  const { dataset, ...rest } = props || {};
  const node = Object.assign(document.createElement(tag), rest);
  Object.assign(node.dataset, dataset || {});  // dataset itself is read-only
  for (const child of children || []) node.append(child);
  return node;
}

function thumbnail(item) {
  const img = element("img", { alt: `gallery item ${item.id}`, loading: "lazy" });
  showImage(img, item.image_url);
  return img;
}

function render(answer) {
  results.replaceChildren();
  if (answer.identities.length === 0) {
    say(`No labelled identity passes the filters (gallery of ${answer.gallery_size} items).`, false);
    return;
  }
  answer.identities.forEach((identity, rank) => {
    const crops = identity.items.map((item) => element("figure", {}, [
      thumbnail(item),
      element("figcaption", {
        textContent: `d ${item.distance.toFixed(3)} · ${item.camera === null ? "camera ?" : `c${item.camera}`}` +
          (item.timestamp !== null ? ` · t ${item.timestamp}` : ""),
      }),
    ]));
    results.append(element("article", { className: "identity", dataset: { pid: identity.pid } }, [
      element("h2", { textContent: `#${rank + 1} · identity ${identity.pid} · distance ${identity.distance.toFixed(3)}` }),
      element("div", { className: "crops" }, crops),
    ]));
  });
  const t = answer.timings;
  const how = [];
  if (answer.crops > 1) how.push(`${answer.crops} crops fused`);
  if (answer.rerank) {
    const r = answer.rerank;
    how.push(`re-ranked: k-reciprocal on the ${r.shortlist} nearest, k1 ${r.k1}, k2 ${r.k2}, λ ${r.lambda_value}`);
  }
  say(`${answer.identities.length} identities from ${answer.gallery_size} items in ${t.total_ms.toFixed(1)} ms ` +
      `(decode ${t.decode_ms.toFixed(1)}, embed ${t.embed_ms.toFixed(1)}, search ${t.search_ms.toFixed(1)})` +
      (how.length ? `; ${how.join("; ")}` : ""), false);
}

async function search() {
  if (chosen.length === 0) return;
  const params = new URLSearchParams({
    k: "1",
    k_identities: document.getElementById("k-identities").value || "5",
    items_per_identity: document.getElementById("per-identity").value || "3",
  });
  for (const c of cameraList(document.getElementById("cameras").value)) params.append("cameras", c);
  for (const c of cameraList(document.getElementById("exclude-cameras").value)) params.append("exclude_cameras", c);
  if (document.getElementById("rerank").checked) params.append("rerank", "true");
  const body = new FormData();
  for (const file of chosen) body.append("image", file, file.name || "query.png");
  say("Searching…", false);
  button.disabled = true;
  try {
    let response, answer;
    try {
      response = await fetch(`/search?${params}`, { method: "POST", body, headers: keyHeaders() });
      answer = await response.json();
    } catch (err) {
      say(`Could not reach the server: ${err}`, true);
      return;
    }
    if (response.status === 401) {
      results.replaceChildren();
      sessionStorage.removeItem(KEY_SLOT);
      showKeyState(true);
      say(keyInput.value ? "That key was refused." : "Enter an API key to search.", true);
      return;
    }
    if (!response.ok) {
      results.replaceChildren();
      const detail = typeof answer.detail === "string" ? answer.detail : JSON.stringify(answer.detail);
      say(`Error ${response.status}: ${detail}`, true);
      return;
    }
    render(answer);
  } finally {
    button.disabled = false;
  }
}

keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_SLOT, keyInput.value);
  showKeyState(false);
  search();
});
document.getElementById("forget-key").addEventListener("click", () => {
  sessionStorage.removeItem(KEY_SLOT);
  keyInput.value = "";
  showKeyState(false);
});
showKeyState(false);

fileInput.addEventListener("change", () => choose(fileInput.files));
form.addEventListener("submit", (event) => { event.preventDefault(); search(); });
for (const name of ["dragenter", "dragover"]) {
  dropZone.addEventListener(name, (event) => { event.preventDefault(); dropZone.classList.add("dragging"); });
}
for (const name of ["dragleave", "drop"]) {
  dropZone.addEventListener(name, () => dropZone.classList.remove("dragging"));
}
dropZone.addEventListener("drop", (event) => {
  event.preventDefault();
  choose(event.dataTransfer.files);
});
