// Live: one tile per camera with its latest frame (about once a second, faces boxed and named by the server) and its
// status; a camera going down turns its tile red as soon as the stream says so (and within the status poll anyway).
import { api, ago, can, clear, formatTime, h, notice, openStream } from "./common.js";

const FRAME_INTERVAL_MS = 1000;
const STATUS_INTERVAL_MS = 2000;
const FRAME_WIDTH = 960;
const tiles = new Map(); // camera name -> {root, image, status, facts}

function statusText(camera) {
  if (camera.up) return camera.since ? `up since ${formatTime(camera.since)}` : "up";
  if (!camera.since) return "waiting for the first frame";
  const reconnecting = camera.reconnects > 0 || camera.last_error ? " — reconnecting" : "";
  // DOWN, or what the outage began as: STALLED (frames stopped), AUTH-FAILED (the password was refused)
  return `${camera.state || "DOWN"} since ${formatTime(camera.since)} (${ago(camera.since)})${reconnecting}`;
}

function makeTile(name) {
  const image = h("img", { class: "frame", alt: `latest frame of camera ${name}`, width: 640, height: 360 });
  const tile = {
    image,
    status: h("p", { class: "camera-status" }),
    facts: h("dl", { class: "facts compact" }),
    error: h("p", { class: "camera-error" }),
    placeholder: h("p", { class: "frame-placeholder" }),
    pending: false,
    frameIndex: "",
  };
  tile.root = h(
    "article",
    { class: "tile", dataset: { camera: name }, "aria-label": `camera ${name}` },
    h("h2", { class: "camera-name" }, name),
    tile.status,
    h("div", { class: "frame-box" }, image, tile.placeholder),
    tile.facts,
    tile.error,
  );
  tiles.set(name, tile);
  return tile;
}

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value)];
}

function updateTile(camera) {
  const tile = tiles.get(camera.name) || makeTile(camera.name);
  if (!tile.root.isConnected) document.getElementById("tiles").append(tile.root);
  tile.root.classList.toggle("down", !camera.up);
  tile.root.dataset.up = String(camera.up);
  tile.status.textContent = statusText(camera);
  if (camera.fps !== undefined) {
    clear(tile.facts).append(
      ...fact("fps", camera.fps.toFixed(1)),
      ...fact("dropped", camera.frames_dropped),
      ...fact("reconnects", camera.reconnects),
    );
  }
  tile.error.textContent = camera.up || !camera.last_error ? "" : `last error: ${camera.last_error}`;
  if ("frame_url" in camera) tile.frameUrl = camera.frame_url;
  tile.placeholder.textContent = can("live.view") ? (tile.frameUrl ? "" : "no frame yet") : "live view needs the operator role";
  tile.placeholder.hidden = Boolean(tile.frameUrl && tile.image.dataset.index);
}

// A new frame is loaded off-screen and swapped in when complete: no flicker, one request at a time per camera.
function refreshFrame(tile) {
  if (!tile.frameUrl || tile.pending || document.hidden) return;
  tile.pending = true;
  const next = new Image();
  next.onload = () => {
    tile.image.src = next.src;
    tile.image.dataset.index = String(Number(tile.image.dataset.index || 0) + 1);
    tile.placeholder.hidden = true;
    tile.pending = false;
  };
  next.onerror = () => {
    tile.pending = false;
  };
  next.src = `${tile.frameUrl}?width=${FRAME_WIDTH}&n=${Date.now()}`;
}

async function pollStatus() {
  try {
    const answer = await api("cameras");
    for (const camera of answer.items) updateTile(camera);
    if (!answer.items.length) notice("No camera is configured.");
  } catch (failure) {
    notice(`Camera status unavailable: ${failure.message}`, "error");
  }
}

async function main() {
  if (!document.getElementById("live-page")) return;
  await pollStatus();
  openStream({ camera: (camera) => updateTile(camera) }, null, pollStatus);
  setInterval(pollStatus, STATUS_INTERVAL_MS);
  setInterval(() => tiles.forEach(refreshFrame), FRAME_INTERVAL_MS);
  tiles.forEach(refreshFrame);
}

main();
