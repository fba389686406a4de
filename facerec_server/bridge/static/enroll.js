// Enroll: a name and samples from the camera (or photos), judged frame by frame by the
// server's enrollment rules (core/enroll.py: no face, several faces, too small,
// near-duplicate); nothing is written until the capture finishes, then in one transaction.
import { api, element, grabJPEG, postJSON, showCamera } from './common.js';

const $ = (id) => document.getElementById(id);
const LABELS = { 'added': 'added', 'no face': 'no face', 'several faces': 'several faces',
                 'too small': 'face too small', 'near-duplicate': 'duplicate (too close to a sample already taken)',
                 'decode error': 'not an image', 'capture over': 'capture over' };
const MAX_SIDE = 1600; // photos are scaled down to this before upload
let capture = null; // {id, timer, frames}

function log(text, ok) {
  const item = element('li', { class: ok ? 'added' : 'refused', text });
  $('enroll-log').prepend(item);
  while ($('enroll-log').children.length > 100) $('enroll-log').lastChild.remove();
}

function result(text) { $('enroll-result').textContent = text; }

async function begin(kind, samples, timeout) {
  const name = $('enroll-name').value.trim();
  const started = await postJSON('/api/enroll', { name, samples, timeout, kind });
  $('enroll-progress').max = started.samples;
  $('enroll-progress').value = 0;
  return started;
}

async function offer(id, blob, label) {
  const reply = await api(`/api/enroll/frame?id=${encodeURIComponent(id)}`,
                          { method: 'POST', headers: { 'Content-Type': 'image/jpeg' }, body: blob });
  $('enroll-progress').value = reply.accepted;
  const added = reply.result === 'added';
  log(`${label}: ${LABELS[reply.result] || reply.result}${added ? ` (${reply.accepted}/${reply.wanted})` : ''}`, added);
  return reply;
}

async function finish(id) {
  try {
    const done = await api(`/api/enroll/finish?id=${encodeURIComponent(id)}`, { method: 'POST' });
    result(done.message);
  } catch (error) {
    result(error.message);
  }
}

async function startCapture() {
  if (capture) return;
  result('');
  let started;
  try {
    await showCamera($('enroll-video'));
    started = await begin('camera', parseInt($('enroll-samples').value, 10) || 5,
                          parseFloat($('enroll-timeout').value) || 20);
  } catch (error) {
    result(error.message);
    return;
  }
  capture = { id: started.id, frames: 0, busy: false };
  $('enroll-start').disabled = true;
  $('enroll-stop').disabled = false;
  result(`capturing ${started.samples} samples of ${started.name}...`);
  const rate = Math.min(5, Math.max(0.2, parseFloat($('enroll-rate').value) || 2));
  capture.timer = setInterval(async () => {
    if (!capture || capture.busy) return;
    capture.busy = true;
    try {
      const blob = await grabJPEG($('enroll-video'), 0.9);
      capture.frames += 1;
      const reply = await offer(capture.id, blob, `frame ${capture.frames}`);
      if (reply.done) await stopCapture();
    } catch (error) {
      result(error.message);
      await stopCapture(false);
    } finally {
      if (capture) capture.busy = false;
    }
  }, 1000 / rate);
}

async function stopCapture(write = true) {
  if (!capture) return;
  const { id, timer } = capture;
  clearInterval(timer);
  capture = null;
  $('enroll-start').disabled = false;
  $('enroll-stop').disabled = true;
  if (write) await finish(id);
}

async function shrink(file) {
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, MAX_SIDE / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement('canvas');
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  canvas.getContext('2d').drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', 0.92));
}

async function uploadPhotos() {
  const files = [...$('enroll-files').files].slice(0, 50);
  if (!files.length) { result('choose one or more photos first'); return; }
  result('');
  try {
    const started = await begin('photos', files.length, 120);
    for (const file of files) {
      let blob;
      try { blob = await shrink(file); } catch (error) { blob = file; }
      await offer(started.id, blob, file.name);
    }
    await finish(started.id);
  } catch (error) {
    result(error.message);
  }
}

let wired = false;

export function enter() {
  if (!wired) {
    wired = true;
    $('enroll-start').addEventListener('click', startCapture);
    $('enroll-stop').addEventListener('click', () => stopCapture(true));
    $('enroll-upload').addEventListener('click', uploadPhotos);
    $('enroll-samples').addEventListener('change', () => {
      $('enroll-progress').max = parseInt($('enroll-samples').value, 10) || 5;
    });
  }
  showCamera($('enroll-video')).catch((error) => result(`camera: ${error.message || error}`));
}

export function leave() {}
