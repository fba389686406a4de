// Shared by the pages: the API, the browser's camera, small formatting helpers.

/** JSON from the bridge's API (the session cookie goes along; no token in any URL). */
export async function api(path, options = {}) {
  const response = await fetch(path, { credentials: 'same-origin', ...options });
  if (response.status === 401) { location.reload(); throw new Error('logged out'); }
  const type = response.headers.get('Content-Type') || '';
  const body = type.startsWith('application/json') ? await response.json() : await response.text();
  if (!response.ok) {
    const message = typeof body === 'string' ? body : (body.error || body.message || response.statusText);
    const error = new Error(message);
    error.status = response.status;
    error.body = body;
    throw error;
  }
  return body;
}

export function postJSON(path, document) {
  return api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' },
                     body: JSON.stringify(document) });
}

let stream = null;

/** The camera's MediaStream, opened once and shared by the Live and Enroll pages. */
export async function camera() {
  if (!stream) {
    stream = await navigator.mediaDevices.getUserMedia(
      { video: { width: { ideal: 640 }, height: { ideal: 480 } }, audio: false });
  }
  return stream;
}

/** Attach the camera to a <video> and wait until it shows frames. */
export async function showCamera(video) {
  if (video.srcObject !== await camera()) video.srcObject = await camera();
  if (video.readyState < 2) {
    await new Promise((resolve) => video.addEventListener('loadeddata', resolve, { once: true }));
  }
  await video.play().catch(() => {});
}

/** One JPEG of what the <video> shows, at its own resolution. */
export function grabJPEG(video, quality, canvas = document.createElement('canvas')) {
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext('2d').drawImage(video, 0, 0);
  return new Promise((resolve) => canvas.toBlob(resolve, 'image/jpeg', quality));
}

export function bytes(n) {
  if (n === null || n === undefined) return '-';
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} kB`;
  return `${(n / 1024 / 1024).toFixed(2)} MB`;
}

export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}
