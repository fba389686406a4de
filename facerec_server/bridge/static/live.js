// Live: the browser's camera streamed through the bridge protocol (the same wss:// port and
// protocol as every device: JPEG binary frames up, JSON {"command", "context"} down), with
// names and boxes drawn from the replies. The stream keeps running on the other pages until
// stopped, so the Cameras and Statistics pages see this browser as a client.
import { bytes, grabJPEG, showCamera } from './common.js';

const COMMAND = { NAME: 1, MESSAGE: 2, FACES: 3, OBJECTS: 4, OBJECTS_ENABLED: 5, LABELS: 6,
                  DETERMINISTIC: 7, FACES_ENABLED: 8, INIT: 9 };
const REPLY_TIMEOUT = 3000; // ms without a reply before the next frame is sent anyway

const $ = (id) => document.getElementById(id);
let socket = null;
let timer = null;
let waitingSince = 0; // when the frame now waiting for its reply was sent (0: none)
let frameSize = { width: 640, height: 480 };
let lastFaces = [];
let authMode = 'token';
const counters = { sent: 0, received: 0, replies: [], latencies: [] };
const canvas = document.createElement('canvas');

export function configure(session) { authMode = session.auth; }

function settings() {
  return [
    [COMMAND.FACES_ENABLED, $('live-faces').checked],
    [COMMAND.OBJECTS_ENABLED, $('live-objects-enabled').checked],
    [COMMAND.LABELS, Math.max(1, parseInt($('live-labels').value, 10) || 5)],
    [COMMAND.DETERMINISTIC, $('live-deterministic').checked],
  ];
}

function send(command, context) {
  if (socket && socket.readyState === WebSocket.OPEN) {
    const text = JSON.stringify({ command, context });
    socket.send(text);
    counters.sent += text.length;
  }
}

function connect() {
  socket = new WebSocket(`wss://${location.host}/`);
  socket.binaryType = 'arraybuffer';
  $('live-status').textContent = 'connecting';
  socket.onmessage = (event) => {
    counters.received += typeof event.data === 'string' ? event.data.length : event.data.byteLength;
    let message;
    try { message = JSON.parse(event.data); } catch (error) { return; }
    if (message.command === COMMAND.INIT) {
      // With a token or certificate the bridge names this client after the credential.
      if (authMode === 'none') send(COMMAND.NAME, 'browser');
      for (const [command, value] of settings()) send(command, value);
      $('live-status').textContent = 'streaming';
    } else if (message.command === COMMAND.FACES) {
      const now = performance.now();
      if (waitingSince) counters.latencies.push(now - waitingSince);
      counters.replies.push(now);
      waitingSince = 0;
      lastFaces = message.context || [];
      drawFaces();
    } else if (message.command === COMMAND.OBJECTS) {
      const list = $('live-objects');
      list.replaceChildren(...(message.context || []).map((o) => {
        const item = document.createElement('li');
        item.className = 'object';
        item.textContent = `${o.label} ${o.prediction.toFixed(2)}`;
        return item;
      }));
      if (!$('live-faces').checked) waitingSince = 0;
    } else if (message.command === COMMAND.MESSAGE) {
      $('live-status').textContent = `server: ${message.context}`;
    }
  };
  socket.onclose = (event) => {
    $('live-status').textContent = `disconnected (${event.code}${event.reason ? ': ' + event.reason : ''})`;
    if (timer) stop();
  };
}

function drawFaces() {
  // The frame the reply is about (still in the grab canvas: with faces on, the next frame
  // is grabbed only after this reply), with its boxes: names stay on the right faces.
  const video = $('live-video');
  const overlay = $('live-overlay');
  overlay.width = video.clientWidth;
  overlay.height = video.clientHeight;
  const context = overlay.getContext('2d');
  context.clearRect(0, 0, overlay.width, overlay.height);
  if (canvas.width) context.drawImage(canvas, 0, 0, overlay.width, overlay.height);
  const scaleX = overlay.width / frameSize.width;
  const scaleY = overlay.height / frameSize.height;
  context.lineWidth = 3;
  context.font = '16px system-ui, sans-serif';
  const names = [];
  for (const face of lastFaces) {
    const known = face.tag !== '';
    const colour = known ? '#00c800' : '#e60000';
    const label = known ? face.tag : 'unknown';
    context.strokeStyle = colour;
    context.strokeRect(face.x * scaleX, face.y * scaleY, face.width * scaleX, face.height * scaleY);
    const textWidth = context.measureText(label).width + 8;
    const top = Math.max(0, face.y * scaleY - 22);
    context.fillStyle = colour;
    context.fillRect(face.x * scaleX, top, textWidth, 22);
    context.fillStyle = '#fff';
    context.fillText(label, face.x * scaleX + 4, top + 16);
    const item = document.createElement('li');
    item.textContent = label;
    if (!known) item.className = 'unknown';
    names.push(item);
  }
  $('live-names').replaceChildren(...names);
}

let grabbing = false;

async function tick() {
  const video = $('live-video');
  if (grabbing || !socket || socket.readyState !== WebSocket.OPEN || video.readyState < 2) return;
  // one frame in flight when each frame gets a reply (faces on), as the original app
  if (waitingSince && performance.now() - waitingSince < REPLY_TIMEOUT) return;
  grabbing = true;
  try {
    const blob = await grabJPEG(video, parseFloat($('live-quality').value), canvas);
    if (!blob || !socket || socket.readyState !== WebSocket.OPEN) return;
    frameSize = { width: canvas.width, height: canvas.height };
    socket.send(blob);
    counters.sent += blob.size;
    waitingSince = $('live-faces').checked ? performance.now() : 0;
  } finally {
    grabbing = false;
  }
}

function schedule() {
  if (timer) clearInterval(timer);
  const rate = Math.min(15, Math.max(0.2, parseFloat($('live-rate').value) || 3.3));
  timer = setInterval(tick, 1000 / rate);
}

async function start() {
  await showCamera($('live-video'));
  connect();
  schedule();
  $('live-toggle').textContent = 'Stop';
}

function clearOverlay() {
  const overlay = $('live-overlay');
  overlay.getContext('2d').clearRect(0, 0, overlay.width, overlay.height);
  $('live-names').replaceChildren();
}

function stop() {
  clearOverlay();
  clearInterval(timer);
  timer = null;
  waitingSince = 0;
  if (socket) { socket.onclose = null; socket.close(1000); socket = null; }
  $('live-status').textContent = 'stopped';
  $('live-toggle').textContent = 'Start';
}

function showCounters() {
  const now = performance.now();
  counters.replies = counters.replies.filter((t) => now - t < 5000);
  counters.latencies = counters.latencies.slice(-20);
  const sorted = [...counters.latencies].sort((a, b) => a - b);
  $('live-fps').textContent = (counters.replies.length / 5).toFixed(1);
  $('live-latency').textContent = sorted.length ? `${Math.round(sorted[sorted.length >> 1])} ms` : '-';
  $('live-sent').textContent = bytes(counters.sent);
  $('live-received').textContent = bytes(counters.received);
}

let started = false;

export function enter() {
  if (!started) {
    started = true;
    $('live-toggle').addEventListener('click', () => (timer ? stop() : start()));
    $('live-rate').addEventListener('change', () => { if (timer) schedule(); });
    $('live-quality').addEventListener('input', () => {
      $('live-quality-value').textContent = parseFloat($('live-quality').value).toFixed(2);
    });
    const inputs = { 'live-faces': COMMAND.FACES_ENABLED, 'live-objects-enabled': COMMAND.OBJECTS_ENABLED,
                     'live-labels': COMMAND.LABELS, 'live-deterministic': COMMAND.DETERMINISTIC };
    for (const [id, command] of Object.entries(inputs)) {
      $(id).addEventListener('change', () => {
        for (const [c, value] of settings()) if (c === command) send(c, value);
        if (!$('live-faces').checked) clearOverlay();
      });
    }
    setInterval(showCounters, 1000);
    start().catch((error) => { $('live-status').textContent = `camera: ${error.message || error}`; });
  } else {
    showCamera($('live-video')).catch(() => {});
  }
}

export function leave() {}
